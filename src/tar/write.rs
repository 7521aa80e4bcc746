//! Writing tar archives: the same entries always give the same bytes.
//!
//! This file owns the byte layout of every tar we write: `unionfs commit`'s changeset
//! layers, `unionfs export`'s flat tars, and the layers inside image archives. It knows
//! nothing of trees or unions: callers walk their directories, decide the order, and hand
//! over one [`Entry`] at a time. Reading tars is `header.rs` and `scan.rs`.
//!
//! # Format
//!
//! We write what Go's `archive/tar` writes in its default mode ("USTAR if possible, else
//! PAX"), because docker, containerd, buildkit and umoci write their layers with it, so
//! every tool that reads layers reads this:
//! - one POSIX ustar header per entry: magic `ustar\0`, version `00`, numbers in
//!   zero-padded octal ending in NUL (`0000644\0`), empty `uname`/`gname` (numeric ids
//!   only), `devmajor`/`devminor` `0000000\0` unless a device, the checksum as six octal
//!   digits, NUL, space;
//! - a path that does not fit the 100-byte `name` is split at a `/` into `prefix` (≤ 155
//!   bytes) and `name` (≤ 100), as ustar allows;
//! - a PAX extended header (typeflag `x`) in front only when ustar cannot say something:
//!   a path that cannot be split, a link target over 100 bytes, a size of 8 GiB or more,
//!   ids over `0o7777777`, an mtime before 1970 or after 2242, and extended attributes
//!   (`SCHILY.xattr.<name>`, which GNU tar, Go, libarchive and the `tar` crate all read).
//!   The ustar field that PAX overrides is left empty (names) or zero (numbers).
//! - the archive ends with two zero blocks, not padded to a 10240-byte record (as Go).
//!
//! Deviations from Go, each on purpose:
//! - Names are bytes. A name that fits ustar is written as it is, even if it is not ASCII
//!   (Go moves any non-ASCII name into PAX and strips it from the ustar field); GNU tar,
//!   Go and the `tar` crate all read ustar names as raw bytes. A name that needs PAX goes
//!   there as raw bytes too, UTF-8 or not, and without POSIX's `hdrcharset=BINARY`: GNU
//!   tar (1.34) does not know that keyword and warns "Ignoring unknown extended header
//!   keyword" on every list and extract, while it, Go and the `tar` crate take the raw
//!   bytes of a `path` record silently.
//! - PAX records are in a fixed order: the numbers (`gid`, `mtime`, `size`, `uid`), then
//!   the names (`linkpath`, `path`), then the xattrs sorted by name. Go sorts all keys
//!   together, which puts `SCHILY.xattr.*` first. But the `tar` crate splits records at
//!   `\n` and stops looking for `size`, `uid` and `gid` at the first piece it cannot parse,
//!   so a newline in an xattr value (binary: `security.capability` can hold 0x0a) or in a
//!   file name would make it read the wrong size or owner; put first, they are safe.
//! - A numeric field PAX overrides is written as octal zero. Go leaves it all NUL, which
//!   the `tar` crate refuses to parse ("numeric field was not a number"), or for a
//!   negative mtime writes the likes of `0000-250600`.
//! - A path over 100 bytes that can be split stays split even when the entry needs PAX for
//!   another reason; Go then moves it into PAX too.
//! - The PAX header's own name never starts with `/` (Go's can, when the first component
//!   is all non-ASCII and its best-effort ASCII conversion drops it).

use std::io::{self, Read, Write};

/// Size of a tar block.
const BLOCK: usize = 512;
/// Length of the ustar `name` and `linkname` fields.
const NAME_LEN: usize = 100;
/// Length of the ustar `prefix` field.
const PREFIX_LEN: usize = 155;
/// Largest value of an 8-byte octal field (7 digits and a NUL): ids, device numbers.
const MAX_OCTAL8: u64 = 0o7777777;
/// Largest value of a 12-byte octal field (11 digits and a NUL): size, mtime.
const MAX_OCTAL12: u64 = 0o77777777777;
/// Go's reader refuses PAX headers larger than this (`maxSpecialFileSize`), and so would
/// docker and containerd.
const MAX_PAX_DATA: usize = 1 << 20;
/// Bytes copied per read of file data.
const COPY_BUF: usize = 128 << 10;
/// Two zero blocks: padding comes from its front, the end-of-archive marker is all of it.
static ZEROS: [u8; 2 * BLOCK] = [0; 2 * BLOCK];

/// Header field offsets and lengths (POSIX ustar).
mod field {
    pub const NAME: (usize, usize) = (0, 100);
    pub const MODE: (usize, usize) = (100, 8);
    pub const UID: (usize, usize) = (108, 8);
    pub const GID: (usize, usize) = (116, 8);
    pub const SIZE: (usize, usize) = (124, 12);
    pub const MTIME: (usize, usize) = (136, 12);
    pub const CHKSUM: (usize, usize) = (148, 8);
    pub const TYPEFLAG: usize = 156;
    pub const LINKNAME: (usize, usize) = (157, 100);
    pub const MAGIC: (usize, usize) = (257, 6);
    pub const VERSION: (usize, usize) = (263, 2);
    pub const DEVMAJOR: (usize, usize) = (329, 8);
    pub const DEVMINOR: (usize, usize) = (337, 8);
    pub const PREFIX: (usize, usize) = (345, 155);
}

/// What an entry is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum EntryKind {
    /// Regular file: [`Entry::size`] bytes of data follow the header.
    #[default]
    File,
    /// Hard link (typeflag `1`) to an earlier entry: its path as written, relative,
    /// without a trailing `/`.
    HardLink(Vec<u8>),
    /// Symbolic link (typeflag `2`): the target bytes, verbatim.
    Symlink(Vec<u8>),
    /// Character device.
    Char {
        /// Major device number.
        major: u32,
        /// Minor device number.
        minor: u32,
    },
    /// Block device.
    Block {
        /// Major device number.
        major: u32,
        /// Minor device number.
        minor: u32,
    },
    /// Directory (written with a trailing `/`).
    Dir,
    /// FIFO.
    Fifo,
}

impl EntryKind {
    /// The ustar typeflag byte of this kind.
    pub fn typeflag(&self) -> u8 {
        match self {
            EntryKind::File => b'0',
            EntryKind::HardLink(_) => b'1',
            EntryKind::Symlink(_) => b'2',
            EntryKind::Char { .. } => b'3',
            EntryKind::Block { .. } => b'4',
            EntryKind::Dir => b'5',
            EntryKind::Fifo => b'6',
        }
    }
}

/// One archive member, as the caller describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// Relative path: no leading `/` or `./`, components separated by single `/`, no `.`
    /// or `..` components. A directory is given without a trailing `/`; the writer
    /// appends one.
    pub path: Vec<u8>,
    /// What the entry is.
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky; masked with `0o7777` (file
    /// type bits are not part of the tar mode field, as Go and docker write it).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch (may be negative).
    pub mtime: i64,
    /// Bytes of data ([`EntryKind::File`] only; 0 for everything else).
    pub size: u64,
    /// Extended attributes, written as PAX `SCHILY.xattr.<name>=<value>` records sorted by
    /// name. Names are non-empty and hold no NUL or `=`; values are any bytes.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Writes entries to `W`, one after the other, and the end-of-archive marker on
/// [`finish`](Writer::finish).
///
/// Nothing is buffered: wrap an unbuffered `W` in a [`std::io::BufWriter`]. After an
/// error the archive is incomplete and should be thrown away.
pub struct Writer<W: Write> {
    inner: W,
    /// Bytes written so far.
    pos: u64,
    /// Copy buffer for file data, allocated on first use.
    buf: Vec<u8>,
}

impl<W: Write> Writer<W> {
    /// A writer appending to `inner`, which is assumed to be at the start of the archive.
    pub fn new(inner: W) -> Self {
        Writer {
            inner,
            pos: 0,
            buf: Vec::new(),
        }
    }

    /// Writes the header(s) of `e`, then (for a file) exactly `e.size` bytes read from
    /// `data`, padded to a block; other kinds ignore `data`. Bytes beyond `e.size` are
    /// not read.
    ///
    /// If `data` ends early, this fails with [`io::ErrorKind::UnexpectedEof`] and the
    /// message "file shrank while being archived: expected N bytes, got M" (the caller
    /// names the file). Invalid entries fail with [`io::ErrorKind::InvalidInput`] before
    /// anything is written (see [`header_bytes`]).
    pub fn append(&mut self, e: &Entry, data: &mut dyn Read) -> io::Result<()> {
        let hdr = header_bytes(e)?;
        self.write_raw(&hdr)?;
        if e.kind == EntryKind::File {
            self.copy_data(e.size, data)?;
        }
        Ok(())
    }

    /// Writes `bytes` verbatim, counted in [`position`](Writer::position): for callers
    /// that write a placeholder header, stream data of a size not known in advance, pad
    /// it, and patch the header afterwards. Keeping the archive well-formed is theirs.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far (not counting what was written through
    /// [`get_mut`](Writer::get_mut)).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The inner writer. Bytes written through it are not counted in
    /// [`position`](Writer::position).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Writes the end-of-archive marker — two zero blocks, not padded to a 10240-byte
    /// record (as Go's `archive/tar`) — flushes, and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.write_raw(&ZEROS)?;
        self.inner.flush()?;
        Ok(self.inner)
    }

    /// Copies exactly `size` bytes of `data`, then the padding to a block.
    fn copy_data(&mut self, size: u64, data: &mut dyn Read) -> io::Result<()> {
        if self.buf.is_empty() {
            self.buf = vec![0; COPY_BUF];
        }
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left).map_or(self.buf.len(), |l| l.min(self.buf.len()));
            let n = match data.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "file shrank while being archived: expected {size} bytes, got {}",
                            size - left
                        ),
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.inner.write_all(&self.buf[..n])?;
            self.pos += n as u64;
            left -= n as u64;
        }
        let pad = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
        self.write_raw(&ZEROS[..pad])
    }
}

/// The bytes [`Writer::append`] writes before the data of `e`: a PAX extended header and
/// its records if `e` needs one, then the ustar header. Callers that patch a header after
/// streaming data of a size unknown in advance use short names, so that this is exactly
/// one 512-byte block whatever the size.
///
/// Fails with [`io::ErrorKind::InvalidInput`] if `e` cannot be written: an empty path,
/// or one with a NUL, a leading or trailing `/`, an empty, `.` or `..` component; a size
/// on anything but a file; an empty link target or one with a NUL; device numbers over
/// `0o7777777`; an empty, duplicate, or NUL- or `=`-holding xattr name; PAX records over
/// 1 MiB (Go's readers refuse them).
pub fn header_bytes(e: &Entry) -> io::Result<Vec<u8>> {
    check(e)?;
    let mut name = e.path.clone();
    if e.kind == EntryKind::Dir {
        name.push(b'/');
    }
    let link: &[u8] = match &e.kind {
        EntryKind::HardLink(t) | EntryKind::Symlink(t) => t,
        _ => &[],
    };

    // PAX records for what ustar cannot hold; (key, value), sorted before writing.
    let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let split = split_ustar(&name);
    if split.is_none() {
        pax.push((b"path".to_vec(), name.clone()));
    }
    if link.len() > NAME_LEN {
        pax.push((b"linkpath".to_vec(), link.to_vec()));
    }
    let fits8 = |v: u32| u64::from(v) <= MAX_OCTAL8;
    if !fits8(e.uid) {
        pax.push((b"uid".to_vec(), e.uid.to_string().into_bytes()));
    }
    if !fits8(e.gid) {
        pax.push((b"gid".to_vec(), e.gid.to_string().into_bytes()));
    }
    if e.size > MAX_OCTAL12 {
        pax.push((b"size".to_vec(), e.size.to_string().into_bytes()));
    }
    let mtime_fits = u64::try_from(e.mtime).is_ok_and(|t| t <= MAX_OCTAL12);
    if !mtime_fits {
        pax.push((b"mtime".to_vec(), e.mtime.to_string().into_bytes()));
    }
    for (k, v) in &e.xattrs {
        pax.push(([b"SCHILY.xattr.", &k[..]].concat(), v.clone()));
    }

    let mut out = Vec::with_capacity(BLOCK);
    if !pax.is_empty() {
        // Numbers, then names, then xattrs (see the module docs for why); sorted within.
        pax.sort_by_cached_key(|(k, _)| {
            let class = match &k[..] {
                b"gid" | b"mtime" | b"size" | b"uid" => 0,
                b"linkpath" | b"path" => 1,
                _ => 2,
            };
            (class, k.clone())
        });
        let mut data = Vec::new();
        for (k, v) in &pax {
            pax_record(&mut data, k, v);
        }
        if data.len() > MAX_PAX_DATA {
            return Err(invalid(format!(
                "{}: PAX records take {} bytes, over the 1 MiB readers accept",
                show(&e.path),
                data.len()
            )));
        }
        out.extend_from_slice(&pax_header(&name, data.len() as u64));
        out.extend_from_slice(&data);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }

    let mut b = [0u8; BLOCK];
    if let Some((prefix, short)) = split {
        put(&mut b, field::NAME, short);
        put(&mut b, field::PREFIX, prefix);
    }
    put_octal(&mut b, field::MODE, u64::from(e.mode & 0o7777));
    // A field PAX overrides holds zero.
    let or_zero = |fits: bool, v: u64| if fits { v } else { 0 };
    put_octal(&mut b, field::UID, or_zero(fits8(e.uid), e.uid.into()));
    put_octal(&mut b, field::GID, or_zero(fits8(e.gid), e.gid.into()));
    put_octal(&mut b, field::SIZE, or_zero(e.size <= MAX_OCTAL12, e.size));
    put_octal(&mut b, field::MTIME, or_zero(mtime_fits, e.mtime as u64));
    b[field::TYPEFLAG] = e.kind.typeflag();
    if link.len() <= NAME_LEN {
        put(&mut b, field::LINKNAME, link);
    }
    let (major, minor) = match e.kind {
        EntryKind::Char { major, minor } | EntryKind::Block { major, minor } => (major, minor),
        _ => (0, 0),
    };
    put_octal(&mut b, field::DEVMAJOR, major.into());
    put_octal(&mut b, field::DEVMINOR, minor.into());
    seal(&mut b);
    out.extend_from_slice(&b);
    Ok(out)
}

/// The PAX extended header block for an entry named `name`, announcing `len` bytes of
/// records. As Go's `writeRawFile`: mode, ids and mtime zero, device fields left NUL.
fn pax_header(name: &[u8], len: u64) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    put(&mut b, field::NAME, &pax_header_name(name));
    put_octal(&mut b, field::MODE, 0);
    put_octal(&mut b, field::UID, 0);
    put_octal(&mut b, field::GID, 0);
    put_octal(&mut b, field::SIZE, len);
    put_octal(&mut b, field::MTIME, 0);
    b[field::TYPEFLAG] = b'x';
    seal(&mut b);
    b
}

/// Go's name for the PAX header of `name`: `path.Join(dir, "PaxHeaders.0", file)` of
/// `path.Split(name)`, non-ASCII bytes dropped, cut to 100 bytes, trailing `/` trimmed
/// (and, ours, leading `/` too). Only tools that ignore PAX ever see it.
fn pax_header_name(name: &[u8]) -> Vec<u8> {
    let cut = name.iter().rposition(|&c| c == b'/').map_or(0, |i| i + 1);
    let (dir, file) = name.split_at(cut);
    let mut n = [dir, b"PaxHeaders.0"].concat();
    if !file.is_empty() {
        n.push(b'/');
        n.extend_from_slice(file);
    }
    // Go's toASCII drops every rune >= 0x80 (and U+FFFD for each invalid byte): that is
    // exactly the bytes >= 0x80, since UTF-8 never uses bytes < 0x80 inside a rune.
    n.retain(|&c| c < 0x80);
    n.truncate(NAME_LEN);
    while n.last() == Some(&b'/') {
        n.pop();
    }
    let lead = n.iter().take_while(|&&c| c == b'/').count();
    n.drain(..lead);
    n
}

/// Where ustar can hold `name`: `Some((prefix, name))` (prefix empty if it fits `name`
/// alone), `None` if it needs PAX. Go's `splitUSTARPath`: the split is at the last `/`
/// that leaves a prefix of at most 155 bytes (a directory's trailing `/` stays in the
/// name part); the name part must be 1 to 100 bytes.
fn split_ustar(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= NAME_LEN {
        return Some((&[], name));
    }
    let mut end = name.len().min(PREFIX_LEN + 1);
    if end == name.len() && name[end - 1] == b'/' {
        end -= 1;
    }
    let i = name[..end].iter().rposition(|&c| c == b'/')?;
    let (prefix, short) = (&name[..i], &name[i + 1..]);
    if i == 0 || short.is_empty() || short.len() > NAME_LEN || prefix.len() > PREFIX_LEN {
        return None;
    }
    Some((prefix, short))
}

/// Appends one PAX record `"<len> <key>=<value>\n"` to `out`, where `<len>` counts the
/// whole record including its own digits.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let digits = |n: usize| n.to_string().len();
    // The length counts ' ', '=', '\n' and its own digits; adding those digits may add a
    // digit to the length, at most once (Go's formatPAXRecord takes the same two steps).
    let base = key.len() + value.len() + 3;
    let len = base + digits(base + digits(base));
    let start = out.len();
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
    debug_assert_eq!(out.len() - start, len);
}

/// Copies `v` into a string field; the rest stays NUL (no NUL when `v` fills it).
fn put(b: &mut [u8; BLOCK], (off, len): (usize, usize), v: &[u8]) {
    debug_assert!(v.len() <= len);
    b[off..off + v.len()].copy_from_slice(v);
}

/// Writes `v` into a numeric field as Go does: zero-padded octal filling all but the
/// last byte, then NUL. Callers checked that `v` fits.
fn put_octal(b: &mut [u8; BLOCK], (off, len): (usize, usize), v: u64) {
    let s = format!("{v:0w$o}", w = len - 1);
    debug_assert_eq!(s.len(), len - 1, "{v:o} overflows a {len}-byte field");
    b[off..off + len - 1].copy_from_slice(&s.as_bytes()[..len - 1]);
    b[off + len - 1] = 0;
}

/// Sets the ustar magic and version, then the checksum: the unsigned sum of all bytes with
/// the checksum field counted as spaces, written as six octal digits, NUL, space (as GNU
/// tar and Go; at most 512 × 255 = 0o376400, so six digits always do).
fn seal(b: &mut [u8; BLOCK]) {
    put(b, field::MAGIC, b"ustar\0");
    put(b, field::VERSION, b"00");
    let (off, len) = field::CHKSUM;
    b[off..off + len].fill(b' ');
    let sum: u32 = b.iter().map(|&c| u32::from(c)).sum();
    b[off..off + len].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// Checks that `e` can be written; see [`header_bytes`] for the rules.
fn check(e: &Entry) -> io::Result<()> {
    check_path("path", &e.path)?;
    match &e.kind {
        EntryKind::HardLink(t) => check_path("hard link target", t)?,
        EntryKind::Symlink(t) if t.is_empty() || t.contains(&0) => {
            return Err(invalid(format!(
                "{}: symlink target \"{}\" is empty or holds a NUL byte",
                show(&e.path),
                show(t)
            )))
        }
        EntryKind::Char { major, minor } | EntryKind::Block { major, minor }
            if u64::from(*major.max(minor)) > MAX_OCTAL8 =>
        {
            return Err(invalid(format!(
                "{}: device {major},{minor} does not fit a tar header (at most {MAX_OCTAL8})",
                show(&e.path)
            )))
        }
        _ => {}
    }
    if e.kind != EntryKind::File && e.size != 0 {
        return Err(invalid(format!(
            "{}: size {} given for an entry that is not a regular file",
            show(&e.path),
            e.size
        )));
    }
    let mut keys: Vec<&[u8]> = e.xattrs.iter().map(|(k, _)| &k[..]).collect();
    keys.sort();
    for (i, k) in keys.iter().enumerate() {
        if k.is_empty() || k.contains(&0) || k.contains(&b'=') {
            return Err(invalid(format!(
                "{}: xattr name \"{}\" is empty or holds a NUL or '='",
                show(&e.path),
                show(k)
            )));
        }
        if i > 0 && keys[i - 1] == *k {
            return Err(invalid(format!(
                "{}: xattr \"{}\" given twice",
                show(&e.path),
                show(k)
            )));
        }
    }
    Ok(())
}

/// Checks a relative archive path (the entry's, or a hard link's target).
fn check_path(what: &str, p: &[u8]) -> io::Result<()> {
    let why = if p.is_empty() {
        "is empty"
    } else if p.contains(&0) {
        "holds a NUL byte"
    } else if p[0] == b'/' {
        "starts with '/'"
    } else if p.ends_with(b"/") {
        "ends with '/'"
    } else if p.split(|&c| c == b'/').any(|c| c.is_empty()) {
        "has an empty component ('//')"
    } else if p.split(|&c| c == b'/').any(|c| c == b"." || c == b"..") {
        "has a '.' or '..' component"
    } else {
        return Ok(());
    };
    Err(invalid(format!("{what} \"{}\" {why}", show(p))))
}

/// `p` for messages, non-UTF-8 bytes escaped.
fn show(p: &[u8]) -> String {
    p.escape_ascii().to_string()
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::header::{parse_pax_records, Header, PaxRecord};

    fn file(path: &str, size: u64) -> Entry {
        Entry {
            path: path.into(),
            mode: 0o644,
            mtime: 1_600_000_000,
            size,
            ..Entry::default()
        }
    }

    fn block(bytes: &[u8]) -> &[u8; BLOCK] {
        bytes.try_into().unwrap()
    }

    /// A ustar block from its fields, the checksum as given (not computed here).
    #[allow(clippy::too_many_arguments)]
    fn ustar(
        name: &str,
        mode: &str,
        uid: &str,
        gid: &str,
        size: &str,
        mtime: &str,
        chksum: &[u8; 8],
        flag: u8,
        link: &str,
        dev: (&str, &str),
    ) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        for (off, v) in [
            (0, name.as_bytes()),
            (100, mode.as_bytes()),
            (108, uid.as_bytes()),
            (116, gid.as_bytes()),
            (124, size.as_bytes()),
            (136, mtime.as_bytes()),
            (148, chksum),
            (157, link.as_bytes()),
            (257, b"ustar\x0000"),
            (329, dev.0.as_bytes()),
            (337, dev.1.as_bytes()),
        ] {
            b[off..off + v.len()].copy_from_slice(v);
        }
        b[156] = flag;
        b
    }

    /// The PAX records of `e` and its main ustar header (checksums checked on the way).
    fn split_header(e: &Entry) -> (Vec<PaxRecord>, [u8; BLOCK]) {
        let h = header_bytes(e).unwrap();
        assert_eq!(h.len() % BLOCK, 0);
        Header(block(&h[..BLOCK])).check_checksum().unwrap();
        Header(block(&h[h.len() - BLOCK..]))
            .check_checksum()
            .unwrap();
        let main = *block(&h[h.len() - BLOCK..]);
        if h.len() == BLOCK {
            return (Vec::new(), main);
        }
        let x = Header(block(&h[..BLOCK]));
        assert_eq!(x.typeflag(), b'x');
        let n = x.size().unwrap() as usize;
        assert_eq!(h.len(), BLOCK + n.next_multiple_of(BLOCK) + BLOCK);
        let recs = parse_pax_records(&h[BLOCK..BLOCK + n]).unwrap();
        (recs, main)
    }

    fn keys(e: &Entry) -> Vec<String> {
        split_header(e)
            .0
            .iter()
            .map(|r| String::from_utf8_lossy(&r.0).into_owned())
            .collect()
    }

    // Expected checksums from Python 3's tarfile (USTAR_FORMAT, empty uname/gname), which
    // lays out unsplit ustar headers as Go does except that it leaves devmajor/devminor
    // NUL for non-devices where Go writes "0000000\0" twice: 14 × b'0' = 672 more, added
    // by hand to its sums (007626, 010366, 006614, 011037; dev/null's is as Python wrote).
    #[test]
    fn ustar_headers_match_an_independent_writer() {
        let z7 = "0000000\0";
        let cases = [
            (
                file("etc/hosts", 11),
                ustar(
                    "etc/hosts",
                    "0000644\0",
                    z7,
                    z7,
                    "00000000013\0",
                    "13727410000\0",
                    b"011066\0 ",
                    b'0',
                    "",
                    (z7, z7),
                ),
            ),
            (
                Entry {
                    path: "usr/bin/sudo".into(),
                    mode: 0o4755,
                    uid: 1000,
                    gid: 2000,
                    mtime: MAX_OCTAL12 as i64,
                    ..Entry::default()
                },
                ustar(
                    "usr/bin/sudo",
                    "0004755\0",
                    "0001750\0",
                    "0003720\0",
                    "00000000000\0",
                    "77777777777\0",
                    b"011626\0 ",
                    b'0',
                    "",
                    (z7, z7),
                ),
            ),
            (
                Entry {
                    path: "dev/null".into(),
                    kind: EntryKind::Char { major: 1, minor: 3 },
                    mode: 0o666,
                    mtime: 1,
                    ..Entry::default()
                },
                ustar(
                    "dev/null",
                    "0000666\0",
                    z7,
                    z7,
                    "00000000000\0",
                    "00000000001\0",
                    b"010662\0 ",
                    b'3',
                    "",
                    ("0000001\0", "0000003\0"),
                ),
            ),
            (
                Entry {
                    path: "tmp".into(),
                    kind: EntryKind::Dir,
                    mode: 0o41777,
                    mtime: 1_700_000_000,
                    ..Entry::default()
                },
                ustar(
                    "tmp/",
                    "0001777\0",
                    z7,
                    z7,
                    "00000000000\0",
                    "14524770400\0",
                    b"010054\0 ",
                    b'5',
                    "",
                    (z7, z7),
                ),
            ),
            (
                Entry {
                    path: "lib/ld.so".into(),
                    kind: EntryKind::Symlink("ld-2.31.so".into()),
                    mode: 0o777,
                    mtime: 1_700_000_000,
                    ..Entry::default()
                },
                ustar(
                    "lib/ld.so",
                    "0000777\0",
                    z7,
                    z7,
                    "00000000000\0",
                    "14524770400\0",
                    b"012277\0 ",
                    b'2',
                    "ld-2.31.so",
                    (z7, z7),
                ),
            ),
        ];
        for (e, want) in cases {
            assert_eq!(header_bytes(&e).unwrap(), want, "{e:?}");
        }
    }

    #[test]
    fn long_paths_split_at_the_last_slash_that_fits() {
        let (a, b, c) = ("a".repeat(60), "b".repeat(60), "c".repeat(30));
        let e = file(&format!("{a}/{b}/{c}"), 5);
        let (recs, h) = split_header(&e);
        assert!(recs.is_empty());
        assert_eq!(Header(&h).name(), c.as_bytes());
        assert_eq!(
            crate::tar::header::cstr(&h[345..500]),
            format!("{a}/{b}").as_bytes()
        );
        assert_eq!(Header(&h).path(), e.path);

        let p = |s: &str| s.as_bytes().to_vec();
        let (x99, x100) = ("x".repeat(99), "x".repeat(100));
        let (p155, n100) = ("p".repeat(155), "n".repeat(100));
        let name = |s: &str| split_ustar(s.as_bytes()).map(|(a, b)| (a.to_vec(), b.to_vec()));
        assert_eq!(name(&x100), Some((vec![], p(&x100))));
        assert_eq!(
            name(&format!("{x99}/")),
            Some((vec![], p(&format!("{x99}/"))))
        );
        assert_eq!(name(&format!("{x100}/")), None);
        assert_eq!(name(&format!("{p155}/{n100}")), Some((p(&p155), p(&n100))));
        assert_eq!(name(&format!("{p155}p/n")), None);
        assert_eq!(name(&format!("a/{x100}x")), None);
        assert_eq!(
            name(&format!("{}/d/", "p".repeat(150))),
            Some((p(&"p".repeat(150)), p("d/")))
        );
        let (a50, b50) = ("a".repeat(50), "b".repeat(50));
        assert_eq!(
            name(&format!("{a50}/{b50}/{n100}")),
            Some((p(&format!("{a50}/{b50}")), p(&n100)))
        );
        // Raw bytes split too (Go would use PAX for non-ASCII).
        let mut raw = vec![0xff; 120];
        raw[60] = b'/';
        assert_eq!(split_ustar(&raw), Some((&raw[..60], &raw[61..])));
    }

    #[test]
    fn pax_records_count_their_own_length() {
        let mut out = Vec::new();
        pax_record(&mut out, b"mtime", b"1350244992.023960108");
        assert_eq!(out, b"30 mtime=1350244992.023960108\n");
        for n in 0..3000 {
            let mut out = Vec::new();
            pax_record(&mut out, b"a", &vec![b'v'; n]);
            let sp = out.iter().position(|&c| c == b' ').unwrap();
            let len: usize = std::str::from_utf8(&out[..sp]).unwrap().parse().unwrap();
            assert_eq!(len, out.len(), "value of {n} bytes");
        }
        let mut out = Vec::new();
        pax_record(&mut out, b"a", &[b'v'; 94]); // 98 + 2 digits = 100: a third digit
        assert!(out.starts_with(b"101 a="));
    }

    #[test]
    fn pax_header_names_follow_go() {
        let n = |s: &[u8]| String::from_utf8(pax_header_name(s)).unwrap();
        assert_eq!(n(b"a"), "PaxHeaders.0/a");
        assert_eq!(n(b"a/b"), "a/PaxHeaders.0/b");
        assert_eq!(n(b"a/b/"), "a/b/PaxHeaders.0");
        assert_eq!(n("d/\u{e9}t\u{e9}".as_bytes()), "d/PaxHeaders.0/t");
        assert_eq!(n(b"\xff/x"), "PaxHeaders.0/x");
        let long = format!("{}/f", "d".repeat(95));
        assert_eq!(n(long.as_bytes()), format!("{}/PaxH", "d".repeat(95)));
        let long = format!("{}/f", "d".repeat(99));
        assert_eq!(n(long.as_bytes()), "d".repeat(99));
    }

    #[test]
    fn pax_only_where_ustar_cannot_say_it() {
        let at = |f: &dyn Fn(&mut Entry)| {
            let mut e = file("f", 0);
            f(&mut e);
            keys(&e)
        };
        let none: Vec<String> = vec![];
        let one = |k: &str| vec![k.to_string()];
        assert_eq!(at(&|_| {}), none);
        assert_eq!(at(&|e| e.uid = MAX_OCTAL8 as u32), none);
        assert_eq!(at(&|e| e.uid = MAX_OCTAL8 as u32 + 1), one("uid"));
        assert_eq!(at(&|e| e.gid = u32::MAX), one("gid"));
        assert_eq!(at(&|e| e.mtime = 0), none);
        assert_eq!(at(&|e| e.mtime = MAX_OCTAL12 as i64), none);
        assert_eq!(at(&|e| e.mtime = MAX_OCTAL12 as i64 + 1), one("mtime"));
        assert_eq!(at(&|e| e.mtime = -1), one("mtime"));
        assert_eq!(at(&|e| e.mtime = i64::MIN), one("mtime"));
        assert_eq!(at(&|e| e.size = MAX_OCTAL12), none);
        assert_eq!(at(&|e| e.size = MAX_OCTAL12 + 1), one("size"));
        assert_eq!(at(&|e| e.mode = 0o177777), none);
        assert_eq!(at(&|e| e.path = vec![b'n'; 100]), none);
        assert_eq!(at(&|e| e.path = vec![b'n'; 101]), one("path"));
        assert_eq!(at(&|e| e.path = vec![0xff; 100]), none);
        assert_eq!(at(&|e| e.path = vec![0xff; 101]), one("path"));
        assert_eq!(at(&|e| e.path = "\u{e9}".repeat(51).into()), one("path"));
        let link = |t: Vec<u8>| move |e: &mut Entry| e.kind = EntryKind::Symlink(t.clone());
        assert_eq!(at(&link(vec![b't'; 100])), none);
        assert_eq!(at(&link(vec![b't'; 101])), one("linkpath"));
        assert_eq!(at(&link(vec![0x80; 101])), one("linkpath"));
        assert_eq!(
            at(&|e| e.kind = EntryKind::HardLink(vec![b'h'; 101])),
            one("linkpath")
        );
        assert_eq!(
            at(&|e| {
                e.xattrs = vec![
                    (b"user.b".to_vec(), vec![0, 1, b'\n']),
                    (b"user.a".to_vec(), vec![]),
                ];
                e.uid = u32::MAX;
            }),
            ["uid", "SCHILY.xattr.user.a", "SCHILY.xattr.user.b"]
        );
    }

    #[test]
    fn fields_pax_overrides_are_empty_or_zero() {
        let e = Entry {
            path: vec![b'p'; 101],
            kind: EntryKind::Symlink(vec![b'l'; 101]),
            uid: 4_000_000_000,
            gid: 4_000_000_001,
            mtime: -86_400,
            xattrs: vec![(b"user.bin".to_vec(), vec![0, 0xff, b'=', b'\n', 0])],
            ..Entry::default()
        };
        let (recs, h) = split_header(&e);
        let want: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"gid".to_vec(), b"4000000001".to_vec()),
            (b"mtime".to_vec(), b"-86400".to_vec()),
            (b"uid".to_vec(), b"4000000000".to_vec()),
            (b"linkpath".to_vec(), vec![b'l'; 101]),
            (b"path".to_vec(), vec![b'p'; 101]),
            (
                b"SCHILY.xattr.user.bin".to_vec(),
                vec![0, 0xff, b'=', b'\n', 0],
            ),
        ];
        assert_eq!(recs, want);
        assert_eq!(&h[..100], &[0; 100]);
        assert_eq!(&h[345..500], &[0; 155]);
        assert_eq!(&h[157..257], &[0; 100]);
        assert_eq!(&h[108..124], b"0000000\x000000000\x00");
        assert_eq!(&h[136..148], b"00000000000\x00");
        let e = file("big", MAX_OCTAL12 + 1);
        let (recs, h) = split_header(&e);
        assert_eq!(recs, [(b"size".to_vec(), b"8589934592".to_vec())]);
        assert_eq!(&h[124..136], b"00000000000\x00");

        // The extended header itself, as Go's writeRawFile writes it.
        let hb = header_bytes(&e).unwrap();
        let mut want = [0u8; BLOCK];
        let recs = b"19 size=8589934592\n";
        want[..16].copy_from_slice(b"PaxHeaders.0/big");
        want[100..148]
            .copy_from_slice(b"0000000\x000000000\x000000000\x0000000000023\x0000000000000\x00");
        want[148..156].copy_from_slice(b"        ");
        want[156] = b'x';
        want[257..265].copy_from_slice(b"ustar\x0000");
        let sum: u32 = want.iter().map(|&c| u32::from(c)).sum();
        want[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        assert_eq!(hb[..BLOCK], want);
        assert_eq!(&hb[BLOCK..BLOCK + recs.len()], recs);
        assert!(hb[BLOCK + recs.len()..2 * BLOCK].iter().all(|&c| c == 0));
    }

    #[test]
    fn invalid_entries_are_refused() {
        let bad = |f: &dyn Fn(&mut Entry)| {
            let mut e = file("f", 0);
            f(&mut e);
            let err = header_bytes(&e).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{e:?}");
            let mut w = Writer::new(Vec::new());
            assert!(w.append(&e, &mut io::empty()).is_err());
            assert_eq!((w.position(), w.get_ref().len()), (0, 0), "nothing written");
            err.to_string()
        };
        for p in ["", "/a", "a/", "a//b", "./a", "a/./b", "a/..", ".."] {
            bad(&|e| e.path = p.into());
        }
        assert_eq!(
            bad(&|e| e.path = b"a\0b".to_vec()),
            r#"path "a\x00b" holds a NUL byte"#
        );
        bad(&|e| e.kind = EntryKind::HardLink(b"a/".to_vec()));
        bad(&|e| e.kind = EntryKind::HardLink(vec![]));
        bad(&|e| e.kind = EntryKind::Symlink(vec![]));
        bad(&|e| e.kind = EntryKind::Symlink(b"a\0".to_vec()));
        bad(&|e| {
            e.kind = EntryKind::Char {
                major: 0,
                minor: MAX_OCTAL8 as u32 + 1,
            }
        });
        bad(&|e| {
            e.kind = EntryKind::Block {
                major: u32::MAX,
                minor: 0,
            }
        });
        let msg = bad(&|e| {
            e.kind = EntryKind::Dir;
            e.size = 1;
        });
        assert_eq!(
            msg,
            "f: size 1 given for an entry that is not a regular file"
        );
        for k in [&b""[..], b"a=b", b"a\0"] {
            bad(&|e| e.xattrs = vec![(k.to_vec(), vec![])]);
        }
        bad(&|e| e.xattrs = vec![(b"user.a".to_vec(), vec![]), (b"user.a".to_vec(), vec![1])]);
        bad(&|e| e.xattrs = vec![(b"user.a".to_vec(), vec![0; MAX_PAX_DATA])]);
        // Just under the limit is fine.
        let mut e = file("f", 0);
        e.xattrs = vec![(b"user.a".to_vec(), vec![0; MAX_PAX_DATA - 100])];
        assert!(header_bytes(&e).is_ok());
        // Links may point anywhere; a symlink's target is verbatim.
        e.kind = EntryKind::Symlink(b"/../x//".to_vec());
        assert!(header_bytes(&e).is_ok());
    }

    #[test]
    fn a_short_reader_is_an_unexpected_eof() {
        let mut w = Writer::new(Vec::new());
        let err = w.append(&file("f", 10), &mut &b"abcd"[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(
            err.to_string(),
            "file shrank while being archived: expected 10 bytes, got 4"
        );
        let err = w.append(&file("g", 1), &mut io::empty()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "file shrank while being archived: expected 1 bytes, got 0"
        );
    }

    /// Hands out at most 3 bytes per read, after an `Interrupted` error each time.
    struct Trickle<'a>(&'a [u8], bool);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 = !self.1;
            if self.1 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(3).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn data_is_copied_exactly_and_padded() {
        let mut w = Writer::new(Vec::new());
        let mut data = &b"hello world, and more"[..];
        w.append(&file("f", 11), &mut data).unwrap();
        assert_eq!(data, b", and more", "bytes beyond the size are not read");
        w.append(&file("g", 5), &mut Trickle(b"12345678", false))
            .unwrap();
        w.append(&file("empty", 0), &mut io::repeat(1)).unwrap();
        let dir = Entry {
            kind: EntryKind::Dir,
            ..file("d", 0)
        };
        w.append(&dir, &mut io::repeat(1)).unwrap();
        assert_eq!(w.position(), 6 * BLOCK as u64);
        let out = w.finish().unwrap();
        assert_eq!(out.len(), 8 * BLOCK);
        assert_eq!(&out[BLOCK..BLOCK + 11], b"hello world");
        assert!(out[BLOCK + 11..2 * BLOCK].iter().all(|&c| c == 0));
        assert_eq!(&out[3 * BLOCK..3 * BLOCK + 5], b"12345");
        assert!(out[3 * BLOCK + 5..4 * BLOCK].iter().all(|&c| c == 0));
        assert_eq!(Header(block(&out[4 * BLOCK..5 * BLOCK])).name(), b"empty");
        assert_eq!(Header(block(&out[5 * BLOCK..6 * BLOCK])).name(), b"d/");
        assert!(out[6 * BLOCK..].iter().all(|&c| c == 0));
    }

    #[test]
    fn same_entries_same_bytes() {
        let entries = [
            file("a", 3),
            Entry {
                path: vec![b'x'; 300],
                xattrs: vec![
                    (b"user.z".to_vec(), b"1".to_vec()),
                    (b"user.a".to_vec(), b"2".to_vec()),
                ],
                ..file("", 3)
            },
            Entry {
                kind: EntryKind::HardLink(vec![b'x'; 300]),
                uid: u32::MAX,
                mtime: -1,
                ..file("h", 0)
            },
        ];
        let write = || {
            let mut w = Writer::new(Vec::new());
            let mut starts = Vec::new();
            for e in &entries {
                starts.push(w.position() as usize);
                w.append(e, &mut &b"abc"[..]).unwrap();
            }
            (w.finish().unwrap(), starts)
        };
        let (one, starts) = write();
        assert_eq!(write().0, one);
        for (e, at) in entries.iter().zip(starts) {
            let h = header_bytes(e).unwrap();
            assert_eq!(one[at..at + h.len()], h);
        }
        // Shuffled xattrs give the same bytes.
        let mut e = entries[1].clone();
        e.xattrs.reverse();
        assert_eq!(
            header_bytes(&e).unwrap(),
            header_bytes(&entries[1]).unwrap()
        );
        // A short name makes one block whatever the size: a placeholder can be patched.
        for size in [0, 1, MAX_OCTAL12] {
            assert_eq!(header_bytes(&file("layer.tar", size)).unwrap().len(), BLOCK);
        }
    }

    #[test]
    fn write_raw_is_counted() {
        let mut w = Writer::new(Vec::new());
        let h = header_bytes(&file("f", 0)).unwrap();
        w.write_raw(&h).unwrap();
        w.get_mut().extend_from_slice(b"x");
        assert_eq!(w.position(), 512);
        assert_eq!(w.get_ref().len(), 513);
    }
}
