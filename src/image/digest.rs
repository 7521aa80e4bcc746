//! Content digests (`algorithm:hex`) and chain IDs, as the OCI image spec
//! defines them ("Digests", "Layer ChainID").

use crate::blob::sha256_bytes;

/// Returns the lower-case hex part of a well-formed `sha256:<64 hex>` digest,
/// or `None`. Only sha256 is used by docker and every registry today; a
/// `sha512:` digest is refused by name where it appears.
pub fn sha256_hex(digest: &str) -> Option<String> {
    let h = digest.strip_prefix("sha256:")?;
    (h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())).then(|| h.to_ascii_lowercase())
}

/// The chain IDs of a stack of layers given bottom first by their diffIDs:
/// `ChainID(L0) = DiffID(L0)`, `ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(n))`,
/// over the `sha256:…` strings.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256_bytes(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// `sha256:<hex>` of `b` (re-exported for callers that only know digests).
pub fn of(b: &[u8]) -> String {
    sha256_bytes(b)
}

/// Short form for listings: the first 12 hex digits.
pub fn short(digest: &str) -> String {
    let h = digest.split_once(':').map_or(digest, |(_, h)| h);
    h.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_formula() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], of(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn digests() {
        let h = "A".repeat(64);
        assert_eq!(sha256_hex(&format!("sha256:{h}")), Some("a".repeat(64)));
        assert_eq!(sha256_hex("sha256:abc"), None);
        assert_eq!(sha256_hex(&format!("sha512:{h}")), None);
        assert_eq!(sha256_hex(&format!("sha256:{}", "g".repeat(64))), None);
        assert_eq!(short("sha256:0123456789abcdef"), "0123456789ab");
    }
}
