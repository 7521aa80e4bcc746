//! How entries are shown to people and scripts: `ls` lines and JSON objects.
//!
//! Owns the output formats of the debugging CLI only; the merge itself is `stack/`.
//! JSON schema (one object per line, stable; `tools/tar-reference` prints the same
//! keys from a GNU tar extraction so the two can be diffed):
//! `path` ("/" for the root; bytes that are not UTF-8 are replaced and the raw name
//! is given as `path_hex`), `type` (file, dir, symlink, char, block, fifo), `mode`
//! (permission bits, `st_mode & 0o7777`), `uid`, `gid`, `size`, `mtime`,
//! `mtime_nsec`, `layer` (0-based index in `--layers`, bottom first), and when
//! they apply: `link` (symlink target), `rdev` ([major, minor]), `nlink` (regular
//! files), `xattrs` ({name: value}, value as text if it is printable UTF-8, else
//! "0x" + hex), `opaque` (true on a directory that hides the layers below),
//! `implicit` (a directory the tar does not contain, made for a missing parent),
//! and with `ls --sha256`, `sha256` (hex digest of a regular file's content).

use serde_json::{json, Map, Value};

use crate::stack::{LayerRef, Merged, Stack};
use crate::tar::index::{F_HIDES_LOWER, F_IMPLICIT, F_OPAQUE};
use crate::tar::verify::hex;

/// The `type` word of an `st_mode`.
pub fn type_word(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "symlink",
        libc::S_IFCHR => "char",
        libc::S_IFBLK => "block",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        _ => "file",
    }
}

/// Renders an xattr value: text when it is printable UTF-8, else `0x` + hex.
pub fn xattr_value(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_owned(),
        _ => format!("0x{}", hex(v)),
    }
}

/// One entry of the merged view as a JSON object (see the module docs).
pub fn json_entry(stack: &Stack, path: &[u8], m: &Merged) -> Value {
    let top = m.top;
    let idx = stack.index(top);
    let ino = idx.inode_of(top.entry);
    let e = idx.entry(ino);
    let mt = idx.meta(ino);
    let x = idx.extra(ino);
    let mut o = Map::new();
    o.insert("path".into(), String::from_utf8_lossy(path).into());
    if std::str::from_utf8(path).is_err() {
        o.insert("path_hex".into(), hex(path).into());
    }
    o.insert("type".into(), type_word(e.mode()).into());
    o.insert("mode".into(), (e.mode() & 0o7777).into());
    o.insert("uid".into(), mt.uid.into());
    o.insert("gid".into(), mt.gid.into());
    o.insert("size".into(), mt.size.into());
    o.insert("mtime".into(), mt.mtime.into());
    o.insert("mtime_nsec".into(), mt.mtime_nsec.into());
    o.insert("layer".into(), top.layer.0.into());
    match e.mode() & libc::S_IFMT {
        libc::S_IFLNK => {
            o.insert("link".into(), String::from_utf8_lossy(x.link).into());
        }
        libc::S_IFCHR | libc::S_IFBLK => {
            o.insert("rdev".into(), json!([x.rdev.0, x.rdev.1]));
        }
        libc::S_IFREG => {
            o.insert("nlink".into(), mt.nlink.into());
        }
        _ => {}
    }
    if !x.xattrs.is_empty() {
        let xs: Map<String, Value> = x
            .xattrs
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    xattr_value(v).into(),
                )
            })
            .collect();
        o.insert("xattrs".into(), xs.into());
    }
    if e.is_dir()
        && m.top.entry.0 != 0
        && m.top.layer.0 > 0
        && (e.has(F_OPAQUE) || e.has(F_HIDES_LOWER))
    {
        o.insert("opaque".into(), true.into());
    }
    if e.has(F_IMPLICIT) {
        o.insert("implicit".into(), true.into());
    }
    Value::Object(o)
}

/// The sha256 (hex) of the content of the regular file `r`, read through the
/// layer exactly as the mount reads it (holes of sparse files as zeros).
pub fn content_sha256(stack: &Stack, r: LayerRef) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let layer = stack.layer(r.layer);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let n = layer.read(r.entry, off, &mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(hex(&h.finalize()))
}

/// `ls -l`-style permission string, e.g. `drwxr-xr-x`.
pub fn mode_string(mode: u32) -> String {
    let t = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    let bit = |b: u32, c: char| if mode & b != 0 { c } else { '-' };
    let special =
        |x: u32, special: u32, lower: char, upper: char| match (mode & x != 0, mode & special != 0)
        {
            (true, true) => lower,
            (false, true) => upper,
            (true, false) => 'x',
            (false, false) => '-',
        };
    s.push(bit(0o400, 'r'));
    s.push(bit(0o200, 'w'));
    s.push(special(0o100, 0o4000, 's', 'S'));
    s.push(bit(0o040, 'r'));
    s.push(bit(0o020, 'w'));
    s.push(special(0o010, 0o2000, 's', 'S'));
    s.push(bit(0o004, 'r'));
    s.push(bit(0o002, 'w'));
    s.push(special(0o001, 0o1000, 't', 'T'));
    s
}

/// The UTC calendar date and time of a Unix time: (year, month, day, hour,
/// minute, second), proleptic Gregorian (Howard Hinnant's civil_from_days).
fn civil(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// UTC `YYYY-MM-DD HH:MM` of a Unix time.
pub fn format_time(secs: i64) -> String {
    let (y, m, d, hh, mm, _) = civil(secs);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}")
}

/// RFC 3339 UTC `YYYY-MM-DDTHH:MM:SSZ` of a Unix time (image configs' `created`).
pub fn rfc3339(secs: i64) -> String {
    let (y, m, d, hh, mm, ss) = civil(secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// One human-readable line: mode, owner, size, time, layer, path (and link target).
pub fn human_line(stack: &Stack, path: &[u8], m: &Merged) -> String {
    let top = m.top;
    let idx = stack.index(top);
    let ino = idx.inode_of(top.entry);
    let e = idx.entry(ino);
    let mt = idx.meta(ino);
    let layer_name = &stack.layer(top.layer).label;
    let size = match e.mode() & libc::S_IFMT {
        libc::S_IFCHR | libc::S_IFBLK => {
            let (a, b) = idx.extra(ino).rdev;
            format!("{a},{b}")
        }
        libc::S_IFDIR => "-".to_owned(),
        _ => mt.size.to_string(),
    };
    let mut line = format!(
        "{} {:>5}/{:<5} {:>10} {}  {}:{:<12} {}",
        mode_string(e.mode()),
        mt.uid,
        mt.gid,
        size,
        format_time(mt.mtime),
        top.layer.0,
        layer_name,
        String::from_utf8_lossy(path).escape_debug()
    );
    if e.mode() & libc::S_IFMT == libc::S_IFLNK {
        line.push_str(" -> ");
        line.push_str(
            &String::from_utf8_lossy(idx.extra(ino).link)
                .escape_debug()
                .to_string(),
        );
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_558_400), "2026-12-06T12:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_time(1_796_558_400), "2026-12-06 12:00");
    }

    #[test]
    fn modes() {
        assert_eq!(mode_string(libc::S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(libc::S_IFREG | 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(libc::S_IFDIR | 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(libc::S_IFREG | 0o2644), "-rw-r-Sr--");
    }

    #[test]
    fn times() {
        assert_eq!(format_time(0), "1970-01-01 00:00");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00");
        assert_eq!(format_time(-1), "1969-12-31 23:59");
    }
}
