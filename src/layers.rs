//! What the user named as the lower layers — loose layer tars (`--layers`) or
//! an image (`--image PATH[:REF]`) — opened and stacked. The one place where
//! the CLI and the mount turn either into a [`Stack`], and where each layer
//! gets the label the mount's `user.unionfs.layer` xattr names it by.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::image::{Image, ImageRef, PlatformChoice};
use crate::stack::Stack;
use crate::tar::{self, IndexOptions};

/// The lower layers, as given.
#[derive(Clone, Debug)]
pub enum Source {
    /// Layer tars, bottom first.
    Layers(Vec<PathBuf>),
    /// An image archive or layout, and which image and platform in it.
    Image {
        /// `PATH[:REF]`, parsed.
        image: ImageRef,
        /// `--platform`, if given.
        platform: Option<String>,
    },
}

impl Default for Source {
    fn default() -> Self {
        Source::Layers(Vec::new())
    }
}

/// Opens every layer and stacks them; for an image, also returns it.
pub fn open(source: &Source, opts: &IndexOptions) -> Result<(Stack, Option<Image>)> {
    match source {
        Source::Layers(paths) => {
            let layers = tar::open_all(paths, opts)?;
            for l in &layers {
                if let Some(reason) = crate::image::refuse_as_layer(l) {
                    return Err(Error::NotATar {
                        path: l.path.clone(),
                        reason,
                    });
                }
            }
            Ok((Stack::new(layers), None))
        }
        Source::Image { image, platform } => {
            let img = Image::open(image, &PlatformChoice::new(platform.as_deref())?, opts)?;
            if img.layers.len() > usize::from(u16::MAX) {
                return Err(Error::Image {
                    path: img.source.clone(),
                    reason: format!(
                        "has {} layers, more than unionfs stacks ({})",
                        img.layers.len(),
                        u16::MAX
                    ),
                });
            }
            let layers = img.open_layers(opts)?;
            Ok((Stack::new(layers), Some(img)))
        }
    }
}

/// Each layer's label, bottom first, as a metadata-only copy
/// (`overlay::metacopy`) names the layer holding its data, stable across
/// mounts: its diffID for an image's layers, a loose tar's absolute path.
pub fn copy_labels(stack: &Stack, image: Option<&Image>) -> Vec<String> {
    match image {
        Some(img) if img.layers.len() == stack.layers().len() => img.diff_ids(),
        _ => stack
            .layers()
            .iter()
            .map(|l| {
                let p = std::fs::canonicalize(&l.path).unwrap_or_else(|_| l.path.clone());
                p.to_string_lossy().into_owned()
            })
            .collect(),
    }
}

/// Each layer's label, bottom first, for the `user.unionfs.layer` xattr: its
/// diffID (`sha256:…`, the image config's `rootfs.diff_ids`) for an image's
/// layers; for loose `--layers` tars, which have no known diffID, the tar's
/// path as given.
pub fn labels(stack: &Stack, image: Option<&Image>) -> Vec<String> {
    match image {
        Some(img) if img.layers.len() == stack.layers().len() => img.diff_ids(),
        _ => stack
            .layers()
            .iter()
            .map(|l| l.path.to_string_lossy().into_owned())
            .collect(),
    }
}
