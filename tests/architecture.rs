//! Boundaries the compiler cannot see on its own (STYLE.md, "Boundaries you can see"):
//! - `platform/` knows nothing of modules;
//! - a module's `mod.rs` declares no public submodule: its face is what it re-exports;
//! - a module names another module only through that face (`crate::modules::other::Item`),
//!   never a path inside it (`crate::modules::other::store::…`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return files;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn modules() -> Vec<String> {
    let Ok(entries) = fs::read_dir(src().join("modules")) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Every `crate::modules::<name>::<rest>` path in `text`, as (name, rest).
fn module_paths(text: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (i, _) in text.match_indices("modules::") {
        let before = &text[..i];
        if !(before.ends_with("crate::") || before.ends_with("super::")) {
            continue;
        }
        let after = &text[i + "modules::".len()..];
        let path: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let mut parts = path.splitn(2, "::");
        let name = parts.next().unwrap_or_default().to_owned();
        found.push((name, parts.next().unwrap_or_default().to_owned()));
    }
    found
}

#[test]
fn the_platform_does_not_know_the_modules() {
    for file in rust_files(&src().join("platform")) {
        let text = fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("crate::modules"),
            "{} depends on a module; the platform must not",
            file.display()
        );
    }
}

#[test]
fn a_module_face_declares_no_public_submodule() {
    for module in modules() {
        let face = src().join("modules").join(&module).join("mod.rs");
        let text = fs::read_to_string(&face).unwrap_or_default();
        for line in text.lines() {
            let line = line.trim_start();
            assert!(
                !(line.starts_with("pub mod ") || line.starts_with("pub(crate) mod ")),
                "{}: `{line}` — keep submodules private and re-export the face",
                face.display()
            );
        }
    }
}

#[test]
fn modules_reach_each_other_only_through_their_faces() {
    let modules = modules();
    for module in &modules {
        for file in rust_files(&src().join("modules").join(module)) {
            let text = fs::read_to_string(&file).unwrap();
            for (other, rest) in module_paths(&text) {
                if &other == module || !modules.contains(&other) {
                    continue;
                }
                let first = rest.split("::").next().unwrap_or_default();
                let reaches_inside =
                    rest.contains("::") || first.chars().next().is_some_and(|c| c.is_lowercase());
                assert!(
                    !reaches_inside,
                    "{} reaches inside `{other}` (`{other}::{rest}`); use its face",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn the_path_scanner_sees_what_it_must() {
    // The checks above pass trivially if the scanner finds nothing; prove it finds paths.
    let found = module_paths(
        "use crate::modules::catalog::store::characters; crate::modules::chat::ChatApi",
    );
    assert_eq!(
        found,
        [
            ("catalog".to_owned(), "store::characters".to_owned()),
            ("chat".to_owned(), "ChatApi".to_owned())
        ]
    );
}
