//! One 512-byte tar header block: field extraction, numbers, checksum, PAX records.
//!
//! Owns the byte-level format only (ustar, GNU, v7 and PAX record syntax). It does not
//! know about archives as a sequence of entries (that is `scan.rs`) nor about trees.
//! Every function here is total: malformed input is an `Err(String)` describing it,
//! never a panic.

/// Size of a tar block.
pub const BLOCK: u64 = 512;

/// Rounds `n` up to the next multiple of [`BLOCK`]; `None` on overflow.
pub fn padded(n: u64) -> Option<u64> {
    n.checked_add(BLOCK - 1).map(|v| v & !(BLOCK - 1))
}

/// Header format, told apart by the magic field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `ustar\0` `00`: POSIX ustar (and PAX).
    Ustar,
    /// `ustar ` ` \0`: old GNU.
    Gnu,
    /// Anything else: pre-POSIX v7.
    V7,
}

/// A borrowed header block.
pub struct Header<'a>(pub &'a [u8; 512]);

/// Returns true if and only if every byte of `block` is zero (an end-of-archive block).
pub fn is_zero_block(block: &[u8; 512]) -> bool {
    block.iter().all(|&b| b == 0)
}

/// Bytes of a NUL-terminated field, up to the first NUL.
pub fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}

/// Parses a numeric header field: octal (optionally space/NUL padded) or GNU base-256.
pub fn parse_number(field: &[u8]) -> Result<i64, String> {
    if let Some(&first) = field.first() {
        if first & 0x80 != 0 {
            return parse_base256(field);
        }
    }
    let mut it = field.iter().copied().peekable();
    while it.peek().is_some_and(|&b| b == b' ' || b == 0) {
        it.next();
    }
    let mut value: i64 = 0;
    let mut seen_digit = false;
    for b in it.by_ref() {
        match b {
            b'0'..=b'7' => {
                seen_digit = true;
                value = value
                    .checked_mul(8)
                    .and_then(|v| v.checked_add(i64::from(b - b'0')))
                    .ok_or_else(|| format!("octal number {:?} overflows", show(field)))?;
            }
            b' ' | 0 => break,
            _ => return Err(format!("invalid octal number {:?}", show(field))),
        }
    }
    // After the terminator only padding may follow.
    if it.any(|b| b != b' ' && b != 0) {
        return Err(format!("invalid octal number {:?}", show(field)));
    }
    let _ = seen_digit;
    Ok(value)
}

fn parse_base256(field: &[u8]) -> Result<i64, String> {
    // Two's complement big-endian; 0x80 marks positive, 0xff negative.
    let negative = field[0] & 0x40 != 0;
    let mut value: i128 = if negative { -1 } else { 0 };
    for (i, &b) in field.iter().enumerate() {
        let b = if i == 0 {
            if negative {
                b | 0x80
            } else {
                b & 0x7f
            }
        } else {
            b
        };
        value = (value << 8) | i128::from(b);
        if !(i128::from(i64::MIN)..=i128::from(i64::MAX)).contains(&value) {
            return Err(format!(
                "base-256 number {:?} overflows 64 bits",
                show(field)
            ));
        }
    }
    Ok(value as i64)
}

/// A field shown for an error message.
pub fn show(field: &[u8]) -> String {
    String::from_utf8_lossy(field).escape_debug().to_string()
}

impl<'a> Header<'a> {
    /// The raw name field.
    pub fn name(&self) -> &'a [u8] {
        cstr(&self.0[0..100])
    }
    /// The mode field.
    pub fn mode(&self) -> Result<i64, String> {
        parse_number(&self.0[100..108]).map_err(|e| format!("mode: {e}"))
    }
    /// The uid field.
    pub fn uid(&self) -> Result<i64, String> {
        parse_number(&self.0[108..116]).map_err(|e| format!("uid: {e}"))
    }
    /// The gid field.
    pub fn gid(&self) -> Result<i64, String> {
        parse_number(&self.0[116..124]).map_err(|e| format!("gid: {e}"))
    }
    /// The size field (bytes of payload in the archive, except for sparse files).
    pub fn size(&self) -> Result<i64, String> {
        parse_number(&self.0[124..136]).map_err(|e| format!("size: {e}"))
    }
    /// The mtime field, in seconds.
    pub fn mtime(&self) -> Result<i64, String> {
        parse_number(&self.0[136..148]).map_err(|e| format!("mtime: {e}"))
    }
    /// The type flag byte.
    pub fn typeflag(&self) -> u8 {
        self.0[156]
    }
    /// The raw link name field.
    pub fn linkname(&self) -> &'a [u8] {
        cstr(&self.0[157..257])
    }
    /// Which header format the magic field announces.
    pub fn format(&self) -> Format {
        match &self.0[257..265] {
            b"ustar\x0000" => Format::Ustar,
            b"ustar  \0" => Format::Gnu,
            m if &m[..6] == b"ustar\0" => Format::Ustar,
            _ => Format::V7,
        }
    }
    /// Device major and minor numbers (ustar/GNU only; 0 for v7).
    pub fn device(&self) -> Result<(i64, i64), String> {
        if self.format() == Format::V7 {
            return Ok((0, 0));
        }
        let major = parse_number(&self.0[329..337]).map_err(|e| format!("devmajor: {e}"))?;
        let minor = parse_number(&self.0[337..345]).map_err(|e| format!("devminor: {e}"))?;
        Ok((major, minor))
    }
    /// The full path: ustar `prefix/name`, or just `name` for GNU and v7.
    pub fn path(&self) -> Vec<u8> {
        let name = self.name();
        if self.format() == Format::Ustar {
            let prefix = cstr(&self.0[345..500]);
            if !prefix.is_empty() {
                let mut p = prefix.to_vec();
                p.push(b'/');
                p.extend_from_slice(name);
                return p;
            }
        }
        name.to_vec()
    }
    /// Checks the header checksum (unsigned sum, or signed as some old tars wrote it).
    pub fn check_checksum(&self) -> Result<(), String> {
        let stored = parse_number(&self.0[148..156]).map_err(|e| format!("checksum field: {e}"))?;
        let mut unsigned: i64 = 0;
        let mut signed: i64 = 0;
        for (i, &b) in self.0.iter().enumerate() {
            let b = if (148..156).contains(&i) { b' ' } else { b };
            unsigned += i64::from(b);
            signed += i64::from(b as i8);
        }
        if stored == unsigned || stored == signed {
            Ok(())
        } else {
            Err(format!(
                "header checksum mismatch (stored {stored}, computed {unsigned})"
            ))
        }
    }
    /// GNU sparse header fields: the real size and the in-header map entries, and
    /// whether extension blocks follow.
    pub fn gnu_sparse(&self) -> Result<GnuSparse, String> {
        let real = parse_number(&self.0[483..495]).map_err(|e| format!("realsize: {e}"))?;
        let map = parse_sparse_entries(&self.0[386..482], 4)?;
        Ok((real, map, self.0[482] != 0))
    }
}

/// Old GNU sparse header fields: (real size, map entries, extension blocks follow).
pub type GnuSparse = (i64, Vec<(i64, i64)>, bool);

/// One PAX record: (keyword, value).
pub type PaxRecord = (Vec<u8>, Vec<u8>);

/// Parses up to `n` (offset, numbytes) pairs of 24 bytes; stops at the first empty one.
pub fn parse_sparse_entries(area: &[u8], n: usize) -> Result<Vec<(i64, i64)>, String> {
    let mut out = Vec::new();
    for i in 0..n {
        let e = &area[i * 24..i * 24 + 24];
        if e[0] == 0 {
            break;
        }
        let off = parse_number(&e[0..12]).map_err(|e| format!("sparse offset: {e}"))?;
        let len = parse_number(&e[12..24]).map_err(|e| format!("sparse numbytes: {e}"))?;
        out.push((off, len));
    }
    Ok(out)
}

/// Splits a PAX extended header payload into (key, value) records, in order.
///
/// Record syntax (POSIX pax): `"%d %s=%s\n", <length>, <keyword>, <value>`, where the
/// length counts the whole record including itself and the newline.
pub fn parse_pax_records(mut data: &[u8]) -> Result<Vec<PaxRecord>, String> {
    let mut out = Vec::new();
    let total = data.len();
    while !data.is_empty() {
        // Trailing NUL padding after the last record is tolerated (some writers pad).
        if data.iter().all(|&b| b == 0) {
            break;
        }
        let at = total - data.len();
        let sp = data
            .iter()
            .take(20)
            .position(|&b| b == b' ')
            .ok_or_else(|| format!("PAX record at byte {at}: no length field"))?;
        let len_str = &data[..sp];
        if len_str.is_empty() || !len_str.iter().all(u8::is_ascii_digit) {
            return Err(format!(
                "PAX record at byte {at}: bad length {:?}",
                show(len_str)
            ));
        }
        let len: usize = std::str::from_utf8(len_str)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("PAX record at byte {at}: length too large"))?;
        if len <= sp + 1 || len > data.len() {
            return Err(format!(
                "PAX record at byte {at}: length {len} out of range (record area has {} bytes)",
                data.len()
            ));
        }
        let rec = &data[sp + 1..len];
        if rec.last() != Some(&b'\n') {
            return Err(format!("PAX record at byte {at}: not newline-terminated"));
        }
        let rec = &rec[..rec.len() - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| format!("PAX record at byte {at}: no '='"))?;
        let (k, v) = (&rec[..eq], &rec[eq + 1..]);
        if k.is_empty() {
            return Err(format!("PAX record at byte {at}: empty keyword"));
        }
        out.push((k.to_vec(), v.to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

/// Parses a PAX time value `[-]SECONDS[.FRACTION]` into (seconds, nanoseconds ≥ 0)
/// as GNU tar does (`decode_timespec`: `strtoumax`, then an optional fraction):
/// the leading number counts and whatever follows it is returned unparsed, like
/// `strtol`'s end pointer, for the caller to warn about (`999xxx9324.43` is 999 s).
/// Fraction digits past the ninth only matter for a negative time, which is
/// rounded toward minus infinity (`-1.10000000000001` is -2 s + 899999999 ns).
/// An error only for a value that does not start with a number, or one
/// outside `i64`.
pub fn parse_pax_time(v: &[u8]) -> Result<(i64, u32, &[u8]), String> {
    let bad = || format!("bad time {:?}", show(v));
    let neg = v.first() == Some(&b'-');
    let digits = |s: &[u8]| s.iter().take_while(|b| b.is_ascii_digit()).count();
    let s = &v[usize::from(neg)..];
    let n = digits(s);
    if n == 0 {
        return Err(bad());
    }
    let int = std::str::from_utf8(&s[..n]).map_err(|_| bad())?;
    // Parsed with its sign so that i64::MIN itself is in range.
    let signed = if neg {
        format!("-{int}")
    } else {
        int.to_owned()
    };
    let mut secs: i64 = signed
        .parse()
        .map_err(|_| format!("time {:?} overflows", show(v)))?;
    let mut rest = &s[n..];
    let mut nanos: u32 = 0;
    let mut trailing_nonzero = false;
    if let Some(frac) = rest.strip_prefix(b".") {
        let f = digits(frac);
        for (i, &b) in frac[..f].iter().enumerate() {
            if i < 9 {
                nanos += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
            } else {
                trailing_nonzero |= b != b'0';
            }
        }
        rest = &frac[f..];
    }
    if neg {
        nanos += u32::from(trailing_nonzero);
        if nanos != 0 {
            secs = secs
                .checked_sub(1)
                .ok_or_else(|| format!("time {:?} overflows", show(v)))?;
            nanos = 1_000_000_000 - nanos;
        }
    }
    Ok((secs, nanos, rest))
}

/// Parses a decimal PAX number field (uid, gid, size, ...).
pub fn parse_pax_decimal(v: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(v)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| format!("bad decimal number {:?}", show(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_numbers() {
        assert_eq!(parse_number(b"0000644\0"), Ok(0o644));
        assert_eq!(parse_number(b"   644 \0"), Ok(0o644));
        assert_eq!(parse_number(b"\0\0\0\0"), Ok(0));
        assert!(parse_number(b"0009\0").is_err());
        assert!(parse_number(b"12 x").is_err());
    }

    #[test]
    fn base256_numbers() {
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[11] = 0x10;
        assert_eq!(parse_number(&f), Ok(16));
        let neg = [0xffu8; 8];
        assert_eq!(parse_number(&neg), Ok(-1));
        let mut huge = [0xffu8; 12];
        huge[0] = 0x80;
        assert!(parse_number(&huge).is_err());
    }

    #[test]
    fn pax_records() {
        let r = parse_pax_records(b"30 mtime=1350244992.023960108\n").unwrap();
        assert_eq!(
            r,
            vec![(b"mtime".to_vec(), b"1350244992.023960108".to_vec())]
        );
        assert!(parse_pax_records(b"99999999999999999999 a=b\n").is_err());
        assert!(parse_pax_records(b"-5 a=b\n").is_err());
        assert!(parse_pax_records(b"3 a\n").is_err());
        assert!(parse_pax_records(b"8 a=bcd").is_err());
        assert!(parse_pax_records(b"6 a=b\n").is_ok());
    }

    #[test]
    fn pax_times() {
        let none: &[u8] = b"";
        assert_eq!(parse_pax_time(b"1.5"), Ok((1, 500_000_000, none)));
        assert_eq!(parse_pax_time(b"-1.5"), Ok((-2, 500_000_000, none)));
        assert_eq!(parse_pax_time(b"-3"), Ok((-3, 0, none)));
        assert_eq!(parse_pax_time(b"12.0000000019"), Ok((12, 1, none)));
        assert_eq!(
            parse_pax_time(b"-0.0000000001"),
            Ok((-1, 999_999_999, none))
        );
        assert_eq!(
            parse_pax_time(b"-9223372036854775808"),
            Ok((i64::MIN, 0, none))
        );
        // GNU tar's strtoumax: the leading number, the rest handed back.
        assert_eq!(parse_pax_time(b"1.2.3"), Ok((1, 200_000_000, &b".3"[..])));
        assert_eq!(
            parse_pax_time(b"999xxx9324.4"),
            Ok((999, 0, &b"xxx9324.4"[..]))
        );
        for bad in [
            &b""[..],
            b"-",
            b"+5",
            b" 5",
            b"x",
            b".5",
            b"99999999999999999999",
        ] {
            assert!(parse_pax_time(bad).is_err(), "{bad:?}");
        }
        assert!(parse_pax_time(b"-9223372036854775808.5").is_err());
    }
}
