//! Whiteout names: the one place that knows the `.wh.` conventions.
//!
//! OCI image spec, "Whiteouts": "A whiteout file is an empty file with a special
//! filename that signifies a path should be deleted. A whiteout filename consists
//! of the prefix `.wh.` plus the basename of the path to be deleted." and "An opaque
//! whiteout entry is a file with the name `.wh..wh..opq` indicating that all
//! siblings are hidden in the lower layer." Names starting `.wh..wh.` are reserved
//! (aufs used them for its own bookkeeping); they are never shown.

/// The whiteout prefix.
pub const PREFIX: &[u8] = b".wh.";
/// The opaque-directory marker.
pub const OPAQUE: &[u8] = b".wh..wh..opq";
/// The reserved (aufs metadata) prefix.
pub const META_PREFIX: &[u8] = b".wh..wh.";

/// What a directory entry name means to the union.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class<'a> {
    /// An ordinary name.
    Plain,
    /// `.wh.NAME`: hides NAME in lower layers.
    Whiteout(&'a [u8]),
    /// `.wh..wh..opq`: the directory does not merge with lower layers.
    Opaque,
    /// `.wh..wh.*` other than the opaque marker (aufs bookkeeping): ignored.
    Meta,
    /// `.wh.` with nothing after it, or `.wh..` / `.wh...`: names no sibling.
    Empty,
}

/// Classifies a single path component.
pub fn classify(name: &[u8]) -> Class<'_> {
    if name == OPAQUE {
        Class::Opaque
    } else if name.starts_with(META_PREFIX) {
        Class::Meta
    } else if let Some(t) = name.strip_prefix(PREFIX) {
        if t.is_empty() || t == b"." || t == b"..".as_slice() {
            Class::Empty
        } else {
            Class::Whiteout(t)
        }
    } else {
        Class::Plain
    }
}

/// Returns true if and only if `name` may not be created through the mount
/// (anything starting with `.wh.`).
pub fn is_reserved(name: &[u8]) -> bool {
    name.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&[u8], Class<'_>)] = &[
            (b"passwd", Class::Plain),
            (b".wh.passwd", Class::Whiteout(b"passwd")),
            (b".wh..wh..opq", Class::Opaque),
            (b".wh..wh.plnk", Class::Meta),
            (b".wh..wh.aufs", Class::Meta),
            (b".wh.", Class::Empty),
            (b".wh..", Class::Empty),
            (b".wh...", Class::Empty),
            (b".wh..hidden", Class::Whiteout(b".hidden")),
            (b"x.wh.y", Class::Plain),
            (b".wh", Class::Plain),
        ];
        for (name, want) in cases {
            assert_eq!(classify(name), *want, "{:?}", String::from_utf8_lossy(name));
        }
        assert!(is_reserved(b".wh.x"));
        assert!(!is_reserved(b"wh.x"));
    }
}
