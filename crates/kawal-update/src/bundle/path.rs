//! The one spelling rule for paths, shared by archive entries and manifest `path` fields.
//!
//! A path is relative, `/`-separated, with no empty, `.` or `..` component and no control
//! character or backslash. This is stricter than tar needs, so that a file has exactly one
//! spelling and a duplicate cannot hide behind `a//b` or `./a`.

use super::error::PathProblem;

/// The name of the manifest entry, first in every bundle.
pub const MANIFEST_NAME: &str = "kawal-bundle.toml";

/// The folder every payload entry lives under.
pub const PAYLOAD_DIR: &str = "payload";

/// Checks a relative path (without a trailing `/`) and returns its number of components.
pub(crate) fn check_relative(path: &str) -> Result<usize, PathProblem> {
    if path.starts_with('/') {
        return Err(PathProblem::Absolute);
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return Err(PathProblem::ForbiddenChar);
    }
    let mut depth = 0;
    for part in path.split('/') {
        match part {
            "" => return Err(PathProblem::EmptyComponent),
            "." => return Err(PathProblem::CurrentDir),
            ".." => return Err(PathProblem::ParentDir),
            _ => depth += 1,
        }
    }
    Ok(depth)
}

/// Where an archive entry belongs, once its path passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    /// The manifest.
    Manifest,
    /// The `payload/` folder itself.
    PayloadRoot,
    /// A path inside `payload/` (without the prefix), as the manifest spells it.
    Payload(String),
}

/// Checks an archive entry's raw path. A folder entry may end with one `/`.
pub(crate) fn check_entry(
    raw: &[u8],
    is_dir: bool,
    max_len: usize,
    max_depth: usize,
) -> Result<Place, PathProblem> {
    if raw.len() > max_len {
        return Err(PathProblem::TooLong {
            len: raw.len(),
            max: max_len,
        });
    }
    let text = std::str::from_utf8(raw).map_err(|_| PathProblem::NotUtf8)?;
    let text = match text.strip_suffix('/') {
        Some(stripped) if is_dir => stripped,
        _ => text,
    };
    // Refuse escapes before anything else, so the message names the real danger.
    check_relative(text)?;
    if text == MANIFEST_NAME {
        return Ok(Place::Manifest);
    }
    if text == PAYLOAD_DIR {
        return Ok(Place::PayloadRoot);
    }
    let inner = text
        .strip_prefix(PAYLOAD_DIR)
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or(PathProblem::NotUnderPayload)?;
    let depth = check_relative(inner)?;
    if depth > max_depth {
        return Err(PathProblem::TooDeep {
            depth,
            max: max_depth,
        });
    }
    Ok(Place::Payload(inner.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(p: &str) -> Result<Place, PathProblem> {
        check_entry(p.as_bytes(), false, 255, 8)
    }

    #[test]
    fn accepts_plain_payload_paths() {
        assert_eq!(
            entry("payload/bin/kawal"),
            Ok(Place::Payload("bin/kawal".into()))
        );
        assert_eq!(entry("kawal-bundle.toml"), Ok(Place::Manifest));
        assert_eq!(
            check_entry(b"payload/", true, 255, 8),
            Ok(Place::PayloadRoot)
        );
    }

    #[test]
    fn refuses_every_other_spelling() {
        assert_eq!(entry("/payload/x"), Err(PathProblem::Absolute));
        assert_eq!(entry("payload/../x"), Err(PathProblem::ParentDir));
        assert_eq!(entry("payload/a/.."), Err(PathProblem::ParentDir));
        assert_eq!(entry("./payload/x"), Err(PathProblem::CurrentDir));
        assert_eq!(entry("payload//x"), Err(PathProblem::EmptyComponent));
        assert_eq!(entry("payload/x/"), Err(PathProblem::EmptyComponent));
        assert_eq!(entry(""), Err(PathProblem::EmptyComponent));
        assert_eq!(entry("payload/a\\b"), Err(PathProblem::ForbiddenChar));
        assert_eq!(entry("payload/a\nb"), Err(PathProblem::ForbiddenChar));
        assert_eq!(entry("other/x"), Err(PathProblem::NotUnderPayload));
        assert_eq!(entry("payloadx/x"), Err(PathProblem::NotUnderPayload));
        assert_eq!(
            check_entry(b"payload/\xff", false, 255, 8),
            Err(PathProblem::NotUtf8)
        );
        assert_eq!(
            check_entry(b"payload/a/b/c", false, 255, 2),
            Err(PathProblem::TooDeep { depth: 3, max: 2 })
        );
        assert_eq!(
            check_entry(b"payload/abc", false, 5, 8),
            Err(PathProblem::TooLong { len: 11, max: 5 })
        );
    }
}
