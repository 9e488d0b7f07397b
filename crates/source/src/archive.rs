//! Unpacking module archives (CUE's module zip, tar.gz artifacts) into `.cue` files, with
//! guards: no path may leave the module root, and the files and the archive are size-capped.

use std::collections::BTreeMap;
use std::io::Read;

/// Largest archive (compressed) we download.
pub(crate) const MAX_ARCHIVE_BYTES: u64 = 32 << 20;
/// Largest total of unpacked bytes we read out of an archive.
pub(crate) const MAX_UNPACKED_BYTES: u64 = 64 << 20;
/// Most entries an archive may hold.
pub(crate) const MAX_ENTRIES: usize = 10_000;

/// A path inside an archive made relative and clean: `None` for entries that name the root;
/// an error for absolute paths, `..`, backslashes or NUL (zip-slip and friends).
pub(crate) fn clean_path(raw: &str) -> Result<Option<String>, String> {
    if raw.contains('\\') || raw.contains('\0') {
        return Err(format!("entry {raw:?} has a backslash or NUL in its path"));
    }
    if raw.starts_with('/') {
        return Err(format!("entry {raw:?} has an absolute path"));
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("entry {raw:?} leaves the module root")),
            other => parts.push(other),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

pub(crate) fn is_cue(path: &str) -> bool {
    std::path::Path::new(path)
        .extension()
        .is_some_and(|e| e == "cue")
}

/// Reads one entry's bytes into `files` when it is a `.cue` file, counting against `budget`.
fn take_entry(
    files: &mut BTreeMap<String, String>,
    path: &str,
    reader: impl Read,
    budget: &mut u64,
) -> Result<(), String> {
    let mut bytes = Vec::new();
    reader
        .take(*budget + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading {path}: {e}"))?;
    let read = bytes.len() as u64;
    if read > *budget {
        return Err(format!(
            "unpacks to more than {MAX_UNPACKED_BYTES} bytes (at {path})"
        ));
    }
    *budget -= read;
    if is_cue(path) {
        let text = String::from_utf8(bytes).map_err(|_| format!("{path} is not UTF-8"))?;
        if files.insert(path.to_owned(), text).is_some() {
            return Err(format!("{path} appears twice"));
        }
    }
    Ok(())
}

/// The `.cue` files of a zip archive (CUE's module format).
pub(crate) fn unzip(bytes: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("not a zip archive: {e}"))?;
    if archive.len() > MAX_ENTRIES {
        return Err(format!("more than {MAX_ENTRIES} entries"));
    }
    let mut files = BTreeMap::new();
    let mut budget = MAX_UNPACKED_BYTES;
    for i in 0..archive.len() {
        let entry = archive
            .by_index(i)
            .map_err(|e| format!("zip entry {i}: {e}"))?;
        if entry.is_dir() {
            continue;
        }
        if entry.is_symlink() {
            return Err(format!("entry {:?} is a symbolic link", entry.name()));
        }
        let Some(path) = clean_path(entry.name())? else {
            continue;
        };
        take_entry(&mut files, &path, entry, &mut budget)?;
    }
    Ok(files)
}

/// The `.cue` files of a gzip-compressed tar archive (Flux/Timoni-style artifacts). Links and
/// other special entries are skipped.
pub(crate) fn untar_gz(bytes: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let decoder = flate2::read::GzDecoder::new(bytes).take(MAX_UNPACKED_BYTES * 2);
    let mut archive = tar::Archive::new(decoder);
    let mut files = BTreeMap::new();
    let mut budget = MAX_UNPACKED_BYTES;
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar.gz archive: {e}"))?;
    for (count, entry) in entries.enumerate() {
        if count >= MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} entries"));
        }
        let entry = entry.map_err(|e| format!("reading the tar.gz archive: {e}"))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let raw = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| "an entry's path is not UTF-8".to_owned())?;
        let Some(path) = clean_path(&raw)? else {
            continue;
        };
        take_entry(&mut files, &path, entry, &mut budget)?;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut out);
        for (path, content) in entries {
            zip.start_file(*path, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(content.as_bytes()).unwrap();
        }
        zip.finish().unwrap();
        out.into_inner()
    }

    fn tar_gz_of(entries: &[(&str, &str)]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        for (path, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            // Write the name raw, so that hostile names reach the reader.
            header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            tar.append(&header, content.as_bytes()).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn paths_stay_inside_the_module() {
        assert_eq!(clean_path("./a/b.cue").unwrap().as_deref(), Some("a/b.cue"));
        assert_eq!(clean_path("a//b.cue").unwrap().as_deref(), Some("a/b.cue"));
        assert_eq!(clean_path("./").unwrap(), None);
        for bad in ["../x.cue", "a/../../x.cue", "/etc/x.cue", "a\\..\\x.cue"] {
            assert!(clean_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn zip_keeps_cue_files_and_refuses_escapes() {
        let files = unzip(&zip_of(&[
            ("cue.mod/module.cue", "module: \"a.b/c@v0\""),
            ("x/x.cue", "package x"),
            ("LICENSE", "text"),
        ]))
        .unwrap();
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            ["cue.mod/module.cue", "x/x.cue"]
        );
        let err = unzip(&zip_of(&[("../evil.cue", "x: 1")])).unwrap_err();
        assert!(err.contains("leaves the module root"), "{err}");
        assert!(unzip(b"not a zip").is_err());
    }

    #[test]
    fn tar_gz_keeps_cue_files_and_refuses_escapes() {
        let files = untar_gz(&tar_gz_of(&[("./a.cue", "package a"), ("b.txt", "x")])).unwrap();
        assert_eq!(files.keys().collect::<Vec<_>>(), ["a.cue"]);
        let err = untar_gz(&tar_gz_of(&[("../../evil.cue", "x: 1")])).unwrap_err();
        assert!(err.contains("leaves the module root"), "{err}");
    }

    #[test]
    fn huge_archives_are_refused() {
        let big = "x".repeat(usize::try_from(MAX_UNPACKED_BYTES).unwrap() + 1);
        let err = unzip(&zip_of(&[("big.cue", &big)])).unwrap_err();
        assert!(err.contains("more than"), "{err}");
    }
}
