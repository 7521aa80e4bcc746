//! Naming an image: `PATH[:REF]` as `--image` takes it, and how a REF (a tag,
//! a name, a digest) matches the names an archive records.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// `PATH[:REF]` as given to `--image`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// The archive or layout directory.
    pub path: PathBuf,
    /// Which image in it: a tag, a full name, or `@sha256:…`.
    pub reference: Option<String>,
    /// `docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`: an image in a registry
    /// (`path` is then the whole reference, for messages).
    pub remote: Option<crate::registry::Reference>,
}

impl ImageRef {
    /// Splits `PATH[:REF]`. An existing path wins: the whole string if it
    /// exists, else the longest prefix ending before a `:` (or an `@`) that
    /// exists, the rest being REF. So `img.tar:v2`, `img.tar:example/app:v2`,
    /// `img.tar@sha256:…` and a path that itself contains `:` all work.
    pub fn parse(spec: &str) -> Result<ImageRef> {
        if spec.is_empty() {
            return Err(Error::Usage("--image: empty path".into()));
        }
        if let Some(rest) = spec.strip_prefix("docker://") {
            let r = crate::registry::Reference::parse(rest)
                .map_err(|why| Error::Usage(format!("--image {spec}: {why}")))?;
            return Ok(ImageRef {
                path: spec.into(),
                reference: None,
                remote: Some(r),
            });
        }
        if Path::new(spec).symlink_metadata().is_ok() {
            return Ok(ImageRef {
                path: spec.into(),
                reference: None,
                remote: None,
            });
        }
        for (i, c) in spec.char_indices().rev() {
            if (c == ':' || c == '@') && i > 0 && Path::new(&spec[..i]).symlink_metadata().is_ok() {
                let rest = if c == '@' { &spec[i..] } else { &spec[i + 1..] };
                if rest.is_empty() {
                    break;
                }
                return Ok(ImageRef {
                    path: spec[..i].into(),
                    reference: Some(rest.to_owned()),
                    remote: None,
                });
            }
        }
        Err(Error::io(
            spec,
            std::io::Error::from_raw_os_error(libc::ENOENT),
        ))
    }
}

/// Returns true if and only if the image name `name` (as an archive records
/// it) is what the user meant by `r`: the same string, its tag alone
/// (`v2`), or the same reference once docker's defaults are filled in
/// (`app` = `docker.io/library/app:latest`).
pub(super) fn name_matches(name: &str, r: &str) -> bool {
    name == r || tag_of(name) == Some(r) || normalize(name) == normalize(r)
}

/// The tag of a reference: after the last `:` of its last path component.
fn tag_of(name: &str) -> Option<&str> {
    let last = name.rsplit('/').next()?;
    last.split_once(':').map(|(_, t)| t)
}

fn normalize(r: &str) -> String {
    let mut s = r.to_owned();
    if tag_of(&s).is_none() && !s.contains('@') {
        s.push_str(":latest");
    }
    let first = s.split('/').next().unwrap_or("");
    let has_host =
        s.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if !has_host {
        s = format!("docker.io/{s}");
    }
    if let Some(rest) = s.strip_prefix("docker.io/") {
        if !rest.contains('/') {
            s = format!("docker.io/library/{rest}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_as_docker_fills_them_in() {
        assert!(name_matches("example/app:v2", "example/app:v2"));
        assert!(name_matches("example/app:v2", "v2"));
        assert!(name_matches("docker.io/example/app:v2", "example/app:v2"));
        assert!(name_matches("busybox:latest", "busybox"));
        assert!(name_matches("docker.io/library/busybox:latest", "busybox"));
        assert!(name_matches("localhost:5000/app:1", "1"));
        assert!(!name_matches("localhost:5000/app:1", "5000/app:1"));
        assert!(!name_matches("example/app:v2", "v1"));
        assert!(!name_matches("example/app:v2", "app:v2"));
        assert_eq!(tag_of("localhost:5000/app"), None);
    }

    #[test]
    fn image_refs_prefer_existing_paths() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("a:b.tar");
        std::fs::write(&img, b"x").unwrap();
        let s = img.to_str().unwrap();
        assert_eq!(ImageRef::parse(s).unwrap().reference, None);
        let r = ImageRef::parse(&format!("{s}:example/app:v2")).unwrap();
        assert_eq!(
            (r.path.as_path(), r.reference.as_deref()),
            (img.as_path(), Some("example/app:v2"))
        );
        let r = ImageRef::parse(&format!("{s}@sha256:00")).unwrap();
        assert_eq!(r.reference.as_deref(), Some("@sha256:00"));
        let r = ImageRef::parse(&format!("{s}:@sha256:00")).unwrap();
        assert_eq!(r.reference.as_deref(), Some("@sha256:00"));
        assert!(ImageRef::parse(&format!("{}/missing.tar:v1", d.path().display())).is_err());
    }
}
