//! libFuzzer target: any bytes as a layer tar. Scanning must fail with
//! `ScanError::Corrupt` or give an index on which every accessor works and which
//! passes its own `persist::validate`. (tests/fuzz_scan.rs does the same from
//! mutated valid archives, plus file reads and reassembly.)
//!
//! Run: `cargo +nightly fuzz run scan -- -max_total_time=600`
#![no_main]

use libfuzzer_sys::fuzz_target;
use unionfs::tar::index::F_DETACHED;
use unionfs::tar::{index, persist, scan, EntryId};

fuzz_target!(|data: &[u8]| {
    let data = data.to_vec();
    let s = match scan::scan(&data) {
        Ok(s) => s,
        Err(scan::ScanError::Corrupt(off, _)) => {
            assert!(off <= data.len() as u64);
            return;
        }
        Err(scan::ScanError::Io(e)) => panic!("I/O error on an in-memory archive: {e}"),
    };
    let idx = index::build(s, data.len() as u64);
    persist::validate(&idx, idx.members.len() as u64).expect("a built index validates");
    let n = idx.entries.len() as u32;
    for i in 0..n {
        let id = EntryId(i);
        let e = idx.entry(id);
        let _ = idx.extra(id);
        let path = idx.path_of(id);
        assert!(idx.inode_of(id).0 < n);
        for c in idx.children(id) {
            let name = idx.name(EntryId(c));
            assert_eq!(idx.child(id, name), Some(EntryId(c)));
        }
        if i != 0 && !e.has(F_DETACHED) && !e.is_whiteout() {
            assert_eq!(idx.lookup_path(&path), Some(id));
        }
    }
});
