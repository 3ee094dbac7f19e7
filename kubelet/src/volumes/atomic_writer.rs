//! Upstream's `AtomicWriter` (`pkg/volume/util/atomic_writer.go`): the files of a
//! configMap, secret, downwardAPI or projected volume live in a timestamped directory
//! (`..2026_12_02_02_30_00.123456789`), `..data` is a symlink to it, and each top-level
//! name the user sees is a symlink through `..data`. An update writes a new timestamped
//! directory and swaps `..data` with one rename, so a reader in the container sees either
//! the old set of files or the new one, never a mix (kubernetes#28898).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::Error;

const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";

/// One file of a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
    /// Owner to set (uid), e.g. a projected token for a pod's runAsUser.
    pub uid: Option<u32>,
    /// Group to set (the pod's fsGroup).
    pub gid: Option<u32>,
}

/// The files of a volume, by path relative to the volume directory.
pub type Payload = BTreeMap<String, FileProjection>;

/// A relative path that stays inside the volume: no `..` element, not absolute, no
/// empty element and not starting with `..` (reserved for the writer's own names).
pub fn validate_path(path: &str) -> Result<(), Error> {
    if path.is_empty() {
        return Err("invalid volume file path \"\": must not be empty".into());
    }
    if path.starts_with('/') {
        return Err(format!(
            "invalid volume file path {path:?}: must be a relative path"
        ));
    }
    if path.starts_with("..") || path.split('/').any(|p| p == ".." || p.is_empty()) {
        return Err(format!(
            "invalid volume file path {path:?}: must not contain '..' or empty elements"
        ));
    }
    Ok(())
}

/// Makes `dir` hold exactly `payload`; does nothing when it already does.
pub fn write(dir: &Path, payload: &Payload) -> Result<(), Error> {
    for path in payload.keys() {
        validate_path(path)?;
    }
    make_dir(dir, 0o755)?;
    let data_link = dir.join(DATA_DIR);
    let old_ts = std::fs::read_link(&data_link).ok();
    if let Some(old) = &old_ts {
        if same_contents(&dir.join(old), payload) {
            return Ok(());
        }
    }

    // 1. The new timestamped directory with every file.
    let ts_name = new_ts_dir(dir)?;
    let ts_dir = dir.join(&ts_name);
    for (path, file) in payload {
        let target = ts_dir.join(path);
        if let Some(parent) = target.parent() {
            make_dir(parent, 0o755)?;
        }
        std::fs::write(&target, &file.data)
            .and_then(|()| {
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(file.mode))
            })
            .map_err(|e| format!("writing {}: {e}", target.display()))?;
        if file.uid.is_some() || file.gid.is_some() {
            rustix::fs::chown(
                &target,
                file.uid.map(rustix::fs::Uid::from_raw),
                file.gid.map(rustix::fs::Gid::from_raw),
            )
            .map_err(|e| format!("chown {}: {e}", target.display()))?;
        }
    }

    // 2. Swap `..data` in one rename.
    let tmp_link = dir.join(DATA_DIR_TMP);
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&ts_name, &tmp_link)
        .and_then(|()| std::fs::rename(&tmp_link, &data_link))
        .map_err(|e| format!("switching {} to {ts_name}: {e}", data_link.display()))?;

    // 3. The names the user sees: one symlink per top-level element through `..data`.
    let wanted: BTreeSet<&str> = payload.keys().filter_map(|p| p.split('/').next()).collect();
    for name in &wanted {
        let link = dir.join(name);
        let target = Path::new(DATA_DIR).join(name);
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => {
                if std::fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
                    continue;
                }
                let _ = std::fs::remove_file(&link);
            }
            // A plain file or directory (written by an older kubelet): replace it.
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir_all(&link);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&link);
            }
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&target, &link)
            .map_err(|e| format!("linking {}: {e}", link.display()))?;
    }

    // 4. What is no longer wanted: old user-visible names and the old directory.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("..") || wanted.contains(name.as_str()) {
                continue;
            }
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir_all(&path);
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    if let Some(old) = old_ts.filter(|o| o.as_os_str() != ts_name.as_str()) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

/// `..<UTC timestamp>`, unique in `dir`.
fn new_ts_dir(dir: &Path) -> Result<String, Error> {
    let now = jiff::Timestamp::now();
    let base = format!("..{}", now.strftime("%Y_%m_%d_%H_%M_%S.%f"));
    for n in 0..100u32 {
        let name = if n == 0 {
            base.clone()
        } else {
            format!("{base}{n}")
        };
        match std::fs::create_dir(dir.join(&name)) {
            Ok(()) => {
                let _ = std::fs::set_permissions(
                    dir.join(&name),
                    std::fs::Permissions::from_mode(0o755),
                );
                return Ok(name);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("creating {}: {e}", dir.join(&name).display())),
        }
    }
    Err(format!(
        "no free timestamped directory in {}",
        dir.display()
    ))
}

/// The timestamped directory holds exactly the payload, with its modes and owners.
fn same_contents(ts_dir: &Path, payload: &Payload) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    if !list_files(ts_dir, ts_dir, &mut found) || found.len() != payload.len() {
        return false;
    }
    payload.iter().all(|(path, file)| {
        let p = ts_dir.join(path);
        let Ok(meta) = std::fs::metadata(&p) else {
            return false;
        };
        meta.permissions().mode() & 0o7777 == file.mode
            && file.uid.is_none_or(|u| meta.uid() == u)
            && file.gid.is_none_or(|g| meta.gid() == g)
            && std::fs::read(&p).is_ok_and(|d| d == file.data)
    })
}

fn list_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    for e in entries.flatten() {
        let path = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            if !list_files(root, &path, out) {
                return false;
            }
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_path_buf());
        }
    }
    true
}

fn make_dir(dir: &Path, mode: u32) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: data.as_bytes().to_vec(),
            mode,
            uid: None,
            gid: None,
        }
    }

    #[test]
    fn data_symlink_swaps_and_old_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("v");
        let payload = Payload::from([
            ("a".to_owned(), file("1", 0o644)),
            ("sub/x.conf".to_owned(), file("x", 0o400)),
        ]);
        write(&vol, &payload).unwrap();
        assert_eq!(std::fs::read_to_string(vol.join("a")).unwrap(), "1");
        assert_eq!(
            std::fs::read_to_string(vol.join("sub/x.conf")).unwrap(),
            "x"
        );
        assert_eq!(
            std::fs::read_link(vol.join("a")).unwrap(),
            Path::new("..data/a")
        );
        let first = std::fs::read_link(vol.join("..data")).unwrap();
        let mode = std::fs::metadata(vol.join("sub/x.conf"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);

        // The same payload again: nothing changes.
        write(&vol, &payload).unwrap();
        assert_eq!(std::fs::read_link(vol.join("..data")).unwrap(), first);

        // A new payload: a new directory, `sub` and the old directory are gone.
        let payload = Payload::from([("a".to_owned(), file("10", 0o600))]);
        write(&vol, &payload).unwrap();
        assert_eq!(std::fs::read_to_string(vol.join("a")).unwrap(), "10");
        let second = std::fs::read_link(vol.join("..data")).unwrap();
        assert_ne!(first, second);
        assert!(!vol.join(&first).exists());
        assert!(std::fs::symlink_metadata(vol.join("sub")).is_err());
        let names: BTreeSet<String> = std::fs::read_dir(&vol)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            BTreeSet::from([
                "..data".to_owned(),
                "a".to_owned(),
                second.to_string_lossy().into_owned()
            ])
        );
    }

    #[test]
    fn files_of_an_older_writer_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "plain").unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        write(
            dir.path(),
            &Payload::from([("a".to_owned(), file("new", 0o644))]),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a")).unwrap(),
            "new"
        );
        assert!(!dir.path().join("d").exists());
    }

    #[test]
    fn paths_must_stay_inside() {
        for bad in ["../escape", "/abs", "a//b", "..data/x", "a/../b", ""] {
            assert!(validate_path(bad).is_err(), "{bad}");
        }
        assert!(validate_path("a/b.conf").is_ok());
        let dir = tempfile::tempdir().unwrap();
        let bad = Payload::from([("../escape".to_owned(), file("x", 0o644))]);
        assert!(write(dir.path(), &bad).is_err());
    }
}
