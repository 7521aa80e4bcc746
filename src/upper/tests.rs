//! Tests of [`Upper`]: opening, path walking (symlinks never followed),
//! namespace operations, attributes, xattrs, whiteouts and opacity in both
//! formats. Copy-up, the tree and the scan have their own tests (in
//! `copy_up.rs`, `tree.rs`, `scan.rs`).

use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::testutil::*;
use super::*;

const OCI: WhiteoutFormat = WhiteoutFormat::Oci;
const OVL: WhiteoutFormat = WhiteoutFormat::Overlay;
const NONE: Option<Owner> = None;

#[test]
fn upper_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Upper>();
    check::<tree::UpperTree>();
}

#[test]
fn open_creates_the_default_work_dir() {
    let f = Fixture::new(OCI);
    let m = lstat(&f.work());
    assert!(m.is_dir());
    assert_eq!(m.mode() & 0o777, 0o700);
    assert_eq!(f.upper.format(), OCI);
    assert!(f.upper.path().ends_with("upper"));
}

#[test]
fn open_refuses_bad_placements() {
    let d = tempfile::tempdir().unwrap();
    let u = d.path().join("u");
    std::fs::create_dir_all(u.join("inner")).unwrap();
    let e = Upper::open(&d.path().join("missing"), None, OCI).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    let e = Upper::open(&u, Some(&u.join("inner")), OCI).unwrap_err();
    assert!(e.to_string().contains("inside one another"), "{e}");
    let e = Upper::open(&u.join("inner"), Some(&u), OCI).unwrap_err();
    assert!(e.to_string().contains("inside one another"), "{e}");
    let e = Upper::open(&u, Some(&u), OCI).unwrap_err();
    assert!(e.to_string().contains("inside one another"), "{e}");
    let t = Tmpfs::mount("1m");
    let e = Upper::open(&u, Some(&t.path.join("w")), OCI).unwrap_err();
    assert!(e.to_string().contains("same filesystem"), "{e}");
    let e = Upper::open(Path::new("/"), None, OCI).unwrap_err();
    assert!(e.to_string().contains("no parent"), "{e}");
}

#[test]
fn open_locks_upper_and_work() {
    let d = tempfile::tempdir().unwrap();
    for n in ["u", "u2"] {
        std::fs::create_dir(d.path().join(n)).unwrap();
    }
    let (u, u2, w) = (d.path().join("u"), d.path().join("u2"), d.path().join("w"));
    let a = Upper::open(&u, Some(&w), OCI).unwrap();
    let e = Upper::open(&u, None, OCI).unwrap_err();
    assert!(e.to_string().contains("in use"), "{e}");
    let e = Upper::open(&u2, Some(&w), OCI).unwrap_err();
    assert!(e.to_string().contains("in use"), "{e}");
    drop(a);
    Upper::open(&u, Some(&w), OCI).unwrap();
}

#[test]
fn open_cleans_leftover_temp_files_only() {
    let d = tempfile::tempdir().unwrap();
    let (u, w, outside) = (
        d.path().join("u"),
        d.path().join("w"),
        d.path().join("outside"),
    );
    for p in [&u, &w.join("unionfs-tmp.9.9/a/b"), &outside] {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(w.join("unionfs-tmp.9.9/a/b/f"), b"x").unwrap();
    std::fs::write(w.join("unionfs-tmp.1.2"), b"x").unwrap();
    std::fs::write(outside.join("precious"), b"x").unwrap();
    std::os::unix::fs::symlink(&outside, w.join("unionfs-tmp.3.4")).unwrap();
    std::fs::write(w.join("keep"), b"x").unwrap();
    let _up = Upper::open(&u, Some(&w), OCI).unwrap();
    assert_eq!(ls(&w), ["keep"]);
    assert_eq!(
        ls(&outside),
        ["precious"],
        "a symlink is removed, never followed"
    );
}

#[test]
fn a_symlink_in_the_upper_never_leads_out() {
    let f = Fixture::new(OCI);
    let target = tempfile::tempdir().unwrap();
    let before = lstat(target.path());
    std::os::unix::fs::symlink(target.path(), f.up("etc")).unwrap();
    std::fs::create_dir(f.up("a")).unwrap();
    std::os::unix::fs::symlink(target.path(), f.up("a/l")).unwrap();
    let u = &f.upper;
    assert_eq!(errno(u.open_dir(&p("etc"))), libc::ENOTDIR);
    assert_eq!(errno(u.open_dir(&p("a/l/x"))), libc::ENOTDIR);
    // The walk of kernels without openat2 says the same.
    assert_eq!(errno(u.walk_dir(&p("etc"))), libc::ENOTDIR);
    assert_eq!(errno(u.walk_dir(&p("a/l/x"))), libc::ENOTDIR);
    assert!(u.walk_dir(&p("a")).is_ok() && u.open_dir(&p("a")).is_ok());
    assert_eq!(errno(u.walk_dir(&p("a/.."))), libc::EINVAL);
    assert_eq!(errno(u.open_dir(&p("a/.."))), libc::EINVAL);
    assert_eq!(
        errno(u.create_file(&p("etc"), b"f", libc::O_WRONLY, 0o644, NONE)),
        libc::ENOTDIR
    );
    assert_eq!(errno(u.mkdir(&p("etc"), b"d", 0o755, NONE)), libc::ENOTDIR);
    assert_eq!(errno(u.symlink(&p("a/l"), b"s", b"x", NONE)), libc::ENOTDIR);
    assert_eq!(
        errno(u.mknod(&p("etc"), b"p", libc::S_IFIFO | 0o644, 0, NONE)),
        libc::ENOTDIR
    );
    assert_eq!(errno(u.link(&p("etc/x"), &p(""), b"y")), libc::ENOTDIR);
    assert_eq!(
        errno(u.rename(&p("etc"), b"x", &p(""), b"y", 0)),
        libc::ENOTDIR
    );
    assert_eq!(
        errno(u.open_file(&p("etc/f"), libc::O_RDONLY)),
        libc::ENOTDIR
    );
    assert_eq!(errno(u.open_file(&p("etc"), libc::O_RDONLY)), libc::ELOOP);
    assert_eq!(
        errno(u.create_file(&p(""), b"etc", libc::O_WRONLY, 0o644, NONE)),
        libc::EEXIST
    );
    assert_eq!(
        errno(u.set_xattr(&p("etc"), b"user.x", b"v", 0)),
        libc::EPERM
    );
    let mode = SetAttr {
        mode: Some(0o777),
        ..SetAttr::default()
    };
    assert_eq!(errno(u.set_attr(&p("etc"), &mode)), libc::EOPNOTSUPP);
    let size = SetAttr {
        size: Some(0),
        ..SetAttr::default()
    };
    assert_eq!(errno(u.set_attr(&p("etc"), &size)), libc::EINVAL);
    // What does work acts on the symlink itself.
    u.set_xattr(&p("etc"), b"trusted.x", b"v", 0).unwrap();
    let own = SetAttr {
        uid: Some(4321),
        ..SetAttr::default()
    };
    assert_eq!(u.set_attr(&p("etc"), &own).unwrap().st_uid, 4321);
    assert_eq!(
        u.readlink(&p("etc")).unwrap(),
        target.path().as_os_str().as_bytes()
    );
    assert_eq!(ls(target.path()), Vec::<String>::new());
    let t = lstat(target.path());
    assert_eq!(
        (t.uid(), t.mode(), t.mtime()),
        (before.uid(), before.mode(), before.mtime())
    );
    assert_eq!(xattr(target.path(), b"trusted.x"), None);
    u.unlink(&p(""), b"etc").unwrap();
    assert!(target.path().exists());
}

#[test]
fn the_real_etc_is_never_touched() {
    let f = Fixture::new(OCI);
    std::os::unix::fs::symlink("/etc", f.up("etc")).unwrap();
    let name = b"unionfs-upper-escape-test";
    assert_eq!(errno(f.upper.open_dir(&p("etc"))), libc::ENOTDIR);
    assert_eq!(
        errno(
            f.upper
                .create_file(&p("etc"), name, libc::O_WRONLY, 0o644, NONE)
        ),
        libc::ENOTDIR
    );
    assert!(!Path::new("/etc/unionfs-upper-escape-test").exists());
}

#[test]
fn reserved_names_are_refused() {
    let f = Fixture::new(OCI);
    let u = &f.upper;
    std::fs::write(f.up("f"), b"").unwrap();
    for n in [&b".wh.x"[..], b".wh..wh..opq", b".wh."] {
        assert_eq!(
            errno(u.create_file(&p(""), n, libc::O_WRONLY, 0o644, NONE)),
            libc::EINVAL
        );
        assert_eq!(errno(u.mkdir(&p(""), n, 0o755, NONE)), libc::EINVAL);
        assert_eq!(errno(u.symlink(&p(""), n, b"t", NONE)), libc::EINVAL);
        assert_eq!(
            errno(u.mknod(&p(""), n, libc::S_IFIFO, 0, NONE)),
            libc::EINVAL
        );
        assert_eq!(errno(u.link(&p("f"), &p(""), n)), libc::EINVAL);
        assert_eq!(errno(u.rename(&p(""), b"f", &p(""), n, 0)), libc::EINVAL);
        assert_eq!(errno(u.unlink(&p(""), n)), libc::EINVAL);
        assert_eq!(errno(u.open_dir(&[n])), libc::EINVAL);
        assert_eq!(errno(u.write_whiteout(&p(""), n)), libc::EINVAL);
    }
    for bad in [&b""[..], b".", b"..", b"a/b"] {
        assert_eq!(
            errno(u.create_file(&p(""), bad, libc::O_WRONLY, 0o644, NONE)),
            libc::EINVAL
        );
        assert_eq!(errno(u.open_dir(&[bad])), libc::EINVAL);
    }
    assert_eq!(ls(&f.up("")), ["f"]);
}

#[test]
fn create_operations() {
    let f = Fixture::new(OCI);
    let u = &f.upper;
    let me = Some(Owner {
        uid: 1000,
        gid: 1001,
    });
    let (mut file, new) = u
        .create_file(&p(""), b"f", libc::O_RDWR, 0o640, me)
        .unwrap();
    file.write_all(b"hello").unwrap();
    assert!(!new.replaced_whiteout);
    let m = lstat(&f.up("f"));
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777, m.len(), m.ino()),
        (1000, 1001, 0o640, 5, new.stat.st_ino)
    );
    let d = u.mkdir(&p(""), b"d", 0o750, me).unwrap();
    assert_eq!(d.stat.st_mode & libc::S_IFMT, libc::S_IFDIR);
    assert_eq!(
        (lstat(&f.up("d")).uid(), lstat(&f.up("d")).mode() & 0o777),
        (1000, 0o750)
    );
    u.mknod(&p("d"), b"fifo", libc::S_IFIFO | 0o600, 0, NONE)
        .unwrap();
    assert_eq!(kind(&f.up("d/fifo")), libc::S_IFIFO);
    u.mknod(
        &p("d"),
        b"null",
        libc::S_IFCHR | 0o666,
        libc::makedev(1, 3),
        NONE,
    )
    .unwrap();
    assert_eq!(lstat(&f.up("d/null")).rdev(), libc::makedev(1, 3));
    assert_eq!(
        errno(u.mknod(&p("d"), b"wh", libc::S_IFCHR, 0, NONE)),
        libc::EPERM
    );
    assert_eq!(
        errno(u.mknod(&p("d"), b"x", libc::S_IFDIR, 0, NONE)),
        libc::EINVAL
    );
    let s = u.symlink(&p("d"), b"s", b"../f", me).unwrap();
    assert_eq!(s.stat.st_uid, 1000);
    assert_eq!(std::fs::read_link(f.up("d/s")).unwrap(), Path::new("../f"));
    let l = u.link(&p("f"), &p("d"), b"hard").unwrap();
    assert_eq!((l.stat.st_ino, l.stat.st_nlink), (new.stat.st_ino, 2));
    for r in [
        u.create_file(&p(""), b"f", libc::O_WRONLY, 0o644, NONE)
            .map(|_| ()),
        u.mkdir(&p(""), b"f", 0o755, NONE).map(drop),
        u.symlink(&p(""), b"d", b"x", NONE).map(drop),
        u.link(&p("f"), &p(""), b"d").map(drop),
    ] {
        assert_eq!(errno(r), libc::EEXIST);
    }
    assert_eq!(errno(u.mkdir(&p("nope"), b"x", 0o755, NONE)), libc::ENOENT);
    assert_eq!(f.work_names(), Vec::<String>::new());
}

#[test]
fn unlink_rmdir_rename() {
    let f = Fixture::new(OVL);
    let u = &f.upper;
    for n in ["a", "b", "c"] {
        std::fs::write(f.up(n), n).unwrap();
    }
    std::fs::create_dir_all(f.up("d/sub")).unwrap();
    assert_eq!(
        errno(u.rename(&p(""), b"a", &p(""), b"b", libc::RENAME_NOREPLACE)),
        libc::EEXIST
    );
    u.rename(&p(""), b"a", &p(""), b"b", libc::RENAME_EXCHANGE)
        .unwrap();
    assert_eq!(std::fs::read_to_string(f.up("b")).unwrap(), "a");
    u.rename(&p(""), b"b", &p("d"), b"moved", 0).unwrap();
    assert_eq!(std::fs::read_to_string(f.up("d/moved")).unwrap(), "a");
    u.rename(&p(""), b"c", &p(""), b"c2", libc::RENAME_WHITEOUT)
        .unwrap();
    assert!(
        is_whiteout(&u.stat(&p("c")).unwrap()),
        "overlay format: the source is a whiteout"
    );
    assert_eq!(
        errno(u.rename(&p(""), b"c2", &p(""), b"c3", 1 << 7)),
        libc::EINVAL
    );
    assert_eq!(errno(u.rmdir(&p(""), b"d")), libc::ENOTEMPTY);
    assert_eq!(errno(u.rmdir(&p(""), b"a")), libc::ENOTDIR);
    u.unlink(&p("d"), b"moved").unwrap();
    assert_eq!(errno(u.unlink(&p("d"), b"sub")), libc::EISDIR);
    u.rmdir(&p("d"), b"sub").unwrap();
    u.rmdir(&p(""), b"d").unwrap();
    assert_eq!(ls(&f.up("")), ["a", "c", "c2"]);
    let oci = Fixture::new(OCI);
    std::fs::write(oci.up("c"), b"").unwrap();
    let e = oci
        .upper
        .rename(&p(""), b"c", &p(""), b"c2", libc::RENAME_WHITEOUT);
    assert_eq!(
        errno(e),
        libc::EINVAL,
        "RENAME_WHITEOUT would write an overlay whiteout"
    );
}

#[test]
fn rmdir_takes_markers_but_not_entries() {
    for fmt in [OCI, OVL] {
        let f = Fixture::new(fmt);
        let u = &f.upper;
        std::fs::create_dir(f.up("d")).unwrap();
        u.write_whiteout(&p("d"), b"gone").unwrap();
        u.set_opaque(&p("d")).unwrap();
        std::fs::write(f.up("d/real"), b"").unwrap();
        assert_eq!(errno(u.rmdir(&p(""), b"d")), libc::ENOTEMPTY);
        std::fs::remove_file(f.up("d/real")).unwrap();
        u.rmdir(&p(""), b"d").unwrap();
        assert!(!f.up("d").exists());
        assert_eq!(f.work_names(), Vec::<String>::new());
    }
}

#[test]
fn stat_open_file_readlink() {
    let f = Fixture::new(OCI);
    let u = &f.upper;
    std::fs::write(f.up("f"), b"data").unwrap();
    std::fs::create_dir(f.up("d")).unwrap();
    mknod(&f.up("fifo"), libc::S_IFIFO | 0o600, 0);
    let mut s = String::new();
    u.open_file(&p("f"), libc::O_RDONLY)
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s, "data");
    u.open_file(&p("f"), libc::O_WRONLY | libc::O_TRUNC)
        .unwrap();
    assert_eq!(lstat(&f.up("f")).len(), 0);
    assert_eq!(
        errno(u.open_file(&p("f"), libc::O_RDWR | libc::O_CREAT)),
        libc::EINVAL
    );
    assert_eq!(errno(u.open_file(&p("d"), libc::O_RDONLY)), libc::EISDIR);
    assert_eq!(
        errno(u.open_file(&p("fifo"), libc::O_RDONLY)),
        libc::EINVAL,
        "and it did not block"
    );
    assert_eq!(errno(u.open_file(&p(""), libc::O_RDONLY)), libc::EINVAL);
    assert_eq!(
        u.stat(&p("d")).unwrap().st_mode & libc::S_IFMT,
        libc::S_IFDIR
    );
    assert_eq!(u.stat(&p("")).unwrap().st_ino, lstat(&f.up("")).ino());
    assert_eq!(errno(u.readlink(&p("f"))), libc::EINVAL);
}

#[test]
fn set_attr_on_files_dirs_and_fds() {
    let f = Fixture::new(OCI);
    let u = &f.upper;
    std::fs::write(f.up("f"), b"0123456789").unwrap();
    std::fs::create_dir(f.up("d")).unwrap();
    let a = SetAttr {
        uid: Some(7),
        gid: Some(8),
        mode: Some(0o4755),
        size: Some(3),
        atime: Some(Time::At(1_000_000, 5)),
        mtime: Some(Time::At(2_000_000, 6)),
    };
    let st = u.set_attr(&p("f"), &a).unwrap();
    assert_eq!(
        (st.st_uid, st.st_gid, st.st_mode & 0o7777, st.st_size),
        (7, 8, 0o4755, 3)
    );
    assert_eq!(
        (st.st_atime, st.st_atime_nsec, st.st_mtime, st.st_mtime_nsec),
        (1_000_000, 5, 2_000_000, 6)
    );
    let now = SetAttr {
        mtime: Some(Time::Now),
        ..SetAttr::default()
    };
    assert!(u.set_attr(&p("f"), &now).unwrap().st_mtime > 2_000_000);
    let size = SetAttr {
        size: Some(1),
        ..SetAttr::default()
    };
    assert_eq!(errno(u.set_attr(&p("d"), &size)), libc::EISDIR);
    let file = u.open_file(&p("f"), libc::O_RDWR).unwrap();
    let st = u.set_attr_fd(file.as_fd(), &size).unwrap();
    assert_eq!(st.st_size, 1);
    let dm = SetAttr {
        mode: Some(0o1777),
        ..SetAttr::default()
    };
    u.set_attr(&p("d"), &dm).unwrap();
    assert_eq!(lstat(&f.up("d")).permissions().mode() & 0o7777, 0o1777);
    u.set_attr(&p(""), &dm).unwrap();
    assert_eq!(lstat(&f.up("")).mode() & 0o7777, 0o1777);
}

#[test]
fn xattrs_hide_private_names() {
    let f = Fixture::new(OCI);
    let u = &f.upper;
    std::fs::write(f.up("f"), b"").unwrap();
    u.set_xattr(&p("f"), b"user.a", b"1", 0).unwrap();
    u.set_xattr(&p("f"), b"trusted.b", b"2", 0).unwrap();
    assert_eq!(
        errno(u.set_xattr(&p("f"), b"user.a", b"1", libc::XATTR_CREATE)),
        libc::EEXIST
    );
    set_xattr(&f.up("f"), b"trusted.overlay.opaque", b"y");
    set_xattr(&f.up("f"), b"user.unionfs.override_stat", b"x");
    assert_eq!(u.get_xattr(&p("f"), b"user.a").unwrap(), b"1");
    let mut names = u.list_xattr(&p("f")).unwrap();
    names.sort();
    assert_eq!(names, [b"trusted.b".to_vec(), b"user.a".to_vec()]);
    for k in [
        &b"trusted.overlay.opaque"[..],
        b"user.overlay.x",
        b"user.unionfs.override_stat",
    ] {
        assert_eq!(errno(u.get_xattr(&p("f"), k)), libc::ENODATA);
        assert_eq!(errno(u.set_xattr(&p("f"), k, b"y", 0)), libc::EPERM);
        assert_eq!(errno(u.remove_xattr(&p("f"), k)), libc::EPERM);
    }
    assert_eq!(
        xattr(&f.up("f"), b"trusted.overlay.opaque").unwrap(),
        b"y",
        "untouched"
    );
    u.remove_xattr(&p("f"), b"user.a").unwrap();
    assert_eq!(errno(u.get_xattr(&p("f"), b"user.a")), libc::ENODATA);
    u.set_xattr(&p(""), b"user.root", b"r", 0).unwrap();
    assert_eq!(u.get_xattr(&p(""), b"user.root").unwrap(), b"r");
}

#[test]
fn oci_whiteouts_and_opaque() {
    let f = Fixture::new(OCI);
    let u = &f.upper;
    let st = u.write_whiteout(&p(""), b"x").unwrap();
    let m = lstat(&f.up(".wh.x"));
    assert!(m.is_file());
    assert_eq!(
        (m.len(), m.mode() & 0o7777, m.uid(), m.ino()),
        (0, 0o600, 0, st.st_ino)
    );
    assert_eq!(
        u.write_whiteout(&p(""), b"x").unwrap().st_ino,
        st.st_ino,
        "idempotent"
    );
    assert_eq!(
        errno(u.write_whiteout(&p(""), &[b'n'; 252])),
        libc::ENAMETOOLONG
    );
    u.write_whiteout(&p(""), &[b'n'; 251]).unwrap();
    assert!(u.remove_whiteout(&p(""), b"x").unwrap());
    assert!(!u.remove_whiteout(&p(""), b"x").unwrap());
    std::fs::create_dir(f.up("d")).unwrap();
    assert!(!u.is_opaque(&p("d")).unwrap());
    u.set_opaque(&p("d")).unwrap();
    u.set_opaque(&p("d")).unwrap();
    assert_eq!(ls(&f.up("d")), [".wh..wh..opq"]);
    assert_eq!(lstat(&f.up("d/.wh..wh..opq")).mode() & 0o7777, 0o600);
    assert!(u.is_opaque(&p("d")).unwrap());
}

#[test]
fn overlay_whiteouts_and_opaque() {
    let f = Fixture::new(OVL);
    let u = &f.upper;
    let st = u.write_whiteout(&p(""), b"x").unwrap();
    assert!(is_whiteout(&st));
    let m = lstat(&f.up("x"));
    assert_eq!(
        (m.mode(), m.rdev()),
        (libc::S_IFCHR, 0),
        "c--------- 0,0 like vfs_whiteout"
    );
    u.write_whiteout(&p(""), b"x").unwrap();
    std::fs::write(f.up("real"), b"").unwrap();
    assert_eq!(errno(u.write_whiteout(&p(""), b"real")), libc::EEXIST);
    assert!(u.remove_whiteout(&p(""), b"x").unwrap());
    assert!(
        !u.remove_whiteout(&p(""), b"real").unwrap(),
        "a real file is not a whiteout"
    );
    assert!(f.up("real").exists());
    std::fs::create_dir(f.up("d")).unwrap();
    u.set_opaque(&p("d")).unwrap();
    assert_eq!(xattr(&f.up("d"), b"trusted.overlay.opaque").unwrap(), b"y");
    assert!(u.is_opaque(&p("d")).unwrap());
    assert_eq!(ls(&f.up("d")), Vec::<String>::new());
    std::fs::create_dir(f.up("userx")).unwrap();
    set_xattr(&f.up("userx"), b"user.overlay.opaque", b"y");
    assert!(
        u.is_opaque(&p("userx")).unwrap(),
        "userxattr overlay format is read too"
    );
    std::fs::create_dir(f.up("xonly")).unwrap();
    set_xattr(&f.up("xonly"), b"trusted.overlay.opaque", b"x");
    assert!(
        !u.is_opaque(&p("xonly")).unwrap(),
        "'x' means 'has xattr whiteouts', not opaque"
    );
}

#[test]
fn creating_over_a_whiteout_replaces_it() {
    for fmt in [OCI, OVL] {
        let f = Fixture::new(fmt);
        let u = &f.upper;
        for n in ["f", "d", "s", "l"] {
            u.write_whiteout(&p(""), n.as_bytes()).unwrap();
        }
        std::fs::write(f.up("src"), b"").unwrap();
        let me = Some(Owner { uid: 55, gid: 66 });
        let (_, nf) = u
            .create_file(&p(""), b"f", libc::O_WRONLY, 0o600, me)
            .unwrap();
        let nd = u.mkdir(&p(""), b"d", 0o755, me).unwrap();
        let ns = u.symlink(&p(""), b"s", b"t", None).unwrap();
        let nl = u.link(&p("src"), &p(""), b"l").unwrap();
        assert!(
            nf.replaced_whiteout
                && nd.replaced_whiteout
                && ns.replaced_whiteout
                && nl.replaced_whiteout
        );
        assert_eq!(ls(&f.up("")), ["d", "f", "l", "s", "src"], "{fmt:?}");
        assert_eq!(kind(&f.up("f")), libc::S_IFREG);
        assert_eq!((lstat(&f.up("f")).uid(), lstat(&f.up("d")).gid()), (55, 66));
        assert_eq!(lstat(&f.up("l")).ino(), lstat(&f.up("src")).ino());
        assert!(
            u.is_opaque(&p("d")).unwrap(),
            "a directory over a whiteout is opaque ({fmt:?})"
        );
        assert_eq!(f.work_names(), Vec::<String>::new());
    }
}

#[test]
fn create_over_an_overlay_whiteout_keeps_set_group_id() {
    let f = Fixture::new(OVL);
    let u = &f.upper;
    std::fs::create_dir(f.up("g")).unwrap();
    std::os::unix::fs::chown(f.up("g"), None, Some(4242)).unwrap();
    std::fs::set_permissions(f.up("g"), std::fs::Permissions::from_mode(0o2775)).unwrap();
    u.write_whiteout(&p("g"), b"over").unwrap();
    let me = Some(Owner { uid: 1, gid: 2 });
    u.mkdir(&p("g"), b"over", 0o755, me).unwrap();
    u.mkdir(&p("g"), b"free", 0o755, None).unwrap();
    for n in ["g/over", "g/free"] {
        let m = lstat(&f.up(n));
        assert_eq!(m.gid(), 4242, "{n}");
        assert_ne!(m.mode() & libc::S_ISGID, 0, "{n}");
    }
}

#[test]
fn replace_with_whiteout() {
    for fmt in [OCI, OVL] {
        let f = Fixture::new(fmt);
        let u = &f.upper;
        std::fs::write(f.up("f"), b"").unwrap();
        std::fs::create_dir_all(f.up("full/x")).unwrap();
        std::fs::create_dir(f.up("marked")).unwrap();
        u.write_whiteout(&p("marked"), b"below").unwrap();
        u.set_opaque(&p("marked")).unwrap();
        for n in ["f", "marked", "absent", "absent"] {
            u.replace_with_whiteout(&p(""), n.as_bytes()).unwrap();
        }
        assert_eq!(
            errno(u.replace_with_whiteout(&p(""), b"full")),
            libc::ENOTEMPTY
        );
        let want: &[&str] = match fmt {
            OCI => &[".wh.absent", ".wh.f", ".wh.marked", "full"],
            OVL => &["absent", "f", "full", "marked"],
        };
        assert_eq!(ls(&f.up("")), want, "{fmt:?}");
        if fmt == OVL {
            assert!(is_whiteout(&u.stat(&p("marked")).unwrap()));
        }
        assert_eq!(ls(&f.up("full")), ["x"]);
        assert_eq!(f.work_names(), Vec::<String>::new());
    }
}

#[test]
fn whiteouts_share_one_inode_and_survive_losing_it() {
    for fmt in [OCI, OVL] {
        let f = Fixture::new(fmt);
        let u = &f.upper;
        std::fs::create_dir(f.up("d")).unwrap();
        let a = u.write_whiteout(&p("d"), b"a").unwrap();
        let b = u.write_whiteout(&p(""), b"b").unwrap();
        assert_eq!(a.st_ino, b.st_ino, "{fmt:?}");
        let c = u.replace_with_whiteout(&p("d"), b"c").unwrap();
        assert_eq!(c.st_ino, a.st_ino, "{fmt:?}");
        // Its work-dir name gone, or taken by something else: a new one.
        let shared = match fmt {
            OCI => "unionfs-whiteout.oci",
            OVL => "unionfs-whiteout.chr",
        };
        std::fs::remove_file(f.work().join(shared)).unwrap();
        let e = u.write_whiteout(&p("d"), b"e").unwrap();
        assert_ne!(e.st_ino, a.st_ino, "{fmt:?}");
        std::fs::remove_file(f.work().join(shared)).unwrap();
        std::fs::write(f.work().join(shared), b"not a whiteout").unwrap();
        let g = u.write_whiteout(&p("d"), b"g").unwrap();
        assert_ne!(g.st_ino, e.st_ino, "{fmt:?}");
        // Each name is still a whiteout of the format, and reads as one.
        for (dir, name) in [("d", "a"), ("", "b"), ("d", "c"), ("d", "e"), ("d", "g")] {
            let on_disk = match fmt {
                OCI => format!(".wh.{name}"),
                OVL => name.to_string(),
            };
            let st = lstat(&f.up(format!("{dir}/{on_disk}").trim_start_matches('/')));
            match fmt {
                OCI => assert!(st.is_file() && st.len() == 0, "{fmt:?} {name}"),
                OVL => assert!(is_whiteout(&u.stat(&p(&format!("{dir}/{name}"))).unwrap())),
            }
        }
        assert_eq!(f.work_names(), Vec::<String>::new());
    }
}
