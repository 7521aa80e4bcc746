//! Id mapping between the container's ids and the ids a mount reports.
//!
//! Owns the translation only. The container's ids are what the layers and the
//! upper's (logical) owners say; the mount reports *host* ids, as the kernel
//! of the mounting namespace sees them. `--uidmap 0:1000:1` (container id 0 is
//! host id 1000, one id) makes a rootless user's container root see the
//! image's root-owned files as its own, the way fuse-overlayfs's `uidmapping`
//! and newuidmap ranges read. A container id no range covers is reported as
//! the overflow id 65534, as the kernel shows ids it cannot map. The squash
//! options report every owner as one id (root, or a given uid/gid).
//!
//! Requests carry host ids (the caller's, a chown's); they are mapped back to
//! container ids before anything is stored.

/// The id the kernel shows for an id it cannot map (`/proc/sys/kernel/overflowuid`).
pub const OVERFLOW_ID: u32 = 65534;

/// One range: `count` ids from `container` on are host ids from `host` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First container id.
    pub container: u32,
    /// First host id.
    pub host: u32,
    /// How many.
    pub count: u32,
}

/// The whole mapping; the default maps every id to itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdMap {
    /// uid ranges (none: identity).
    pub uids: Vec<Range>,
    /// gid ranges (none: identity).
    pub gids: Vec<Range>,
    /// Report every owner as this uid.
    pub squash_uid: Option<u32>,
    /// Report every group as this gid.
    pub squash_gid: Option<u32>,
}

/// Parses `CONTAINER:HOST:COUNT[,CONTAINER:HOST:COUNT…]`.
pub fn parse_ranges(s: &str) -> Result<Vec<Range>, String> {
    let mut out: Vec<Range> = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let f: Vec<&str> = part.split(':').collect();
        let num = |i: usize| -> Result<u32, String> {
            f.get(i)
                .and_then(|v| v.parse::<u32>().ok())
                .ok_or_else(|| format!("{part:?}: expected CONTAINER_ID:HOST_ID:COUNT (numbers)"))
        };
        if f.len() != 3 {
            return Err(format!("{part:?}: expected CONTAINER_ID:HOST_ID:COUNT"));
        }
        let r = Range {
            container: num(0)?,
            host: num(1)?,
            count: num(2)?,
        };
        if r.count == 0
            || r.container.checked_add(r.count - 1).is_none()
            || r.host.checked_add(r.count - 1).is_none()
        {
            return Err(format!("{part:?}: empty range, or one past the largest id"));
        }
        let overlaps =
            |a: u32, b: u32, n: u32, m: u32| a < b.saturating_add(m) && b < a.saturating_add(n);
        if out.iter().any(|o| {
            overlaps(o.container, r.container, o.count, r.count)
                || overlaps(o.host, r.host, o.count, r.count)
        }) {
            return Err(format!("{part:?}: overlaps another range"));
        }
        out.push(r);
    }
    Ok(out)
}

fn to_host(ranges: &[Range], id: u32) -> u32 {
    if ranges.is_empty() {
        return id;
    }
    ranges
        .iter()
        .find(|r| id >= r.container && id - r.container < r.count)
        .map_or(OVERFLOW_ID, |r| r.host + (id - r.container))
}

fn to_container(ranges: &[Range], id: u32) -> u32 {
    if ranges.is_empty() {
        return id;
    }
    ranges
        .iter()
        .find(|r| id >= r.host && id - r.host < r.count)
        .map_or(OVERFLOW_ID, |r| r.container + (id - r.host))
}

impl IdMap {
    /// Returns true if and only if every id is reported as it is.
    pub fn is_identity(&self) -> bool {
        *self == IdMap::default()
    }

    /// The uid to report for container uid `id`.
    pub fn uid_out(&self, id: u32) -> u32 {
        self.squash_uid.unwrap_or_else(|| to_host(&self.uids, id))
    }

    /// The gid to report for container gid `id`.
    pub fn gid_out(&self, id: u32) -> u32 {
        self.squash_gid.unwrap_or_else(|| to_host(&self.gids, id))
    }

    /// The container uid of host uid `id` (a caller, a chown).
    pub fn uid_in(&self, id: u32) -> u32 {
        to_container(&self.uids, id)
    }

    /// The container gid of host gid `id`.
    pub fn gid_in(&self, id: u32) -> u32 {
        to_container(&self.gids, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_map_both_ways_and_unmapped_ids_overflow() {
        let m = IdMap {
            uids: parse_ranges("0:1000:1,1:100000:65536").unwrap(),
            ..Default::default()
        };
        assert_eq!(m.uid_out(0), 1000);
        assert_eq!(m.uid_out(1), 100000);
        assert_eq!(m.uid_out(65536), 165535);
        assert_eq!(m.uid_out(65537), OVERFLOW_ID);
        assert_eq!(m.uid_in(1000), 0);
        assert_eq!(m.uid_in(100005), 6);
        assert_eq!(m.uid_in(5), OVERFLOW_ID);
        assert_eq!(m.gid_out(7), 7, "no gid ranges: identity");
        let s = IdMap {
            squash_uid: Some(0),
            squash_gid: Some(0),
            ..Default::default()
        };
        assert_eq!((s.uid_out(1234), s.gid_out(99)), (0, 0));
        assert!(IdMap::default().is_identity() && !s.is_identity());
    }

    #[test]
    fn bad_ranges_are_refused() {
        for bad in [
            "0:1000",
            "a:b:c",
            "0:1000:0",
            "0:1000:2,1:2000:1",
            "4294967295:0:2",
        ] {
            assert!(parse_ranges(bad).is_err(), "{bad}");
        }
    }
}
