//! The documentation stays true to the repository: every test a page names exists, every
//! relative link leads to a file, every `make` target it tells users to run exists. (What
//! the tests themselves prove is checked by the tests; this only keeps the pages from
//! pointing at things that are gone.)

mod common;

use common::repo;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.push(repo().join("README.md"));
    pages.sort();
    assert!(pages.len() >= 9, "{pages:?}");
    pages
}

fn read(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// The names of the `#[test]` functions of a test file: the `fn` that follows a `#[test]`
/// line (other attributes, such as `#[ignore]`, may sit between them). A helper's `fn name(`
/// is not a test.
fn test_names(source: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut lines = source.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line != "#[test]" {
            continue;
        }
        let item = lines.by_ref().find(|l| !l.starts_with("#[") && !l.starts_with("//"));
        if let Some(name) = item.and_then(|l| l.strip_prefix("fn ")).and_then(|l| l.split_once('(')) {
            names.insert(name.0.to_string());
        }
    }
    names
}

#[test]
fn test_names_are_only_the_functions_marked_test() {
    let source = "fn helper() {}\n#[test]\nfn plain() {}\n#[test]\n#[ignore]\n// why\nfn ignored() {}\n\
                  #[cfg(test)]\nfn not_a_test() {}\n";
    let names: Vec<String> = test_names(source).into_iter().collect();
    assert_eq!(names, ["ignored", "plain"]);
}

/// Backticked `file::test` names (and `file::*`) in the pages.
#[test]
fn every_test_the_pages_name_exists() {
    let mut named = BTreeSet::new();
    for page in pages() {
        // Test tables name tests as `file::test` in their rows (elsewhere `a::b` is Rust).
        let rows: String = read(&page).lines().filter(|l| l.starts_with("| ")).collect::<Vec<_>>().join("\n");
        for piece in rows.split('`').skip(1).step_by(2) {
            if let Some((file, test)) = piece.split_once("::") {
                let ident = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
                if ident(file) && (test == "*" || ident(test)) && !piece.contains(' ') {
                    named.insert((page.clone(), file.to_string(), test.to_string()));
                }
            }
        }
    }
    assert!(named.len() >= 40, "found only {} test names", named.len());
    let mut missing = Vec::new();
    for (page, file, test) in &named {
        let source = repo().join("tests").join(format!("{file}.rs"));
        let Ok(text) = std::fs::read_to_string(&source) else {
            missing.push(format!("{}: {file}::{test} (no tests/{file}.rs)", page.display()));
            continue;
        };
        let tests = test_names(&text);
        if tests.is_empty() || (test != "*" && !tests.contains(test)) {
            missing.push(format!("{}: {file}::{test}", page.display()));
        }
    }
    // The browser suite is Python: its tests are named `browser: test_…`.
    let browser = std::fs::read_to_string(repo().join("tests/browser/browser_test.py")).unwrap();
    for page in pages() {
        for line in read(&page).lines().filter(|l| l.starts_with("| browser: `")) {
            let name = line.trim_start_matches("| browser: `").split('`').next().unwrap();
            if !browser.contains(&format!("def {name}(")) {
                missing.push(format!("{}: browser {name}", page.display()));
            }
        }
    }
    assert!(missing.is_empty(), "tests named in the docs that do not exist:\n{}", missing.join("\n"));
}

/// Markdown links `[text](target)` that are not URLs must lead to a file (anchors ignored).
#[test]
fn every_relative_link_leads_to_a_file() {
    let mut broken = Vec::new();
    let mut links = 0;
    for page in pages() {
        let text = read(&page);
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with('#') || target.contains(' ') {
                continue;
            }
            links += 1;
            let path = target.split('#').next().unwrap();
            if !page.parent().unwrap().join(path).exists() {
                broken.push(format!("{}: {target}", page.display()));
            }
        }
    }
    assert!(links >= 20, "found only {links} relative links");
    assert!(broken.is_empty(), "links to files that do not exist:\n{}", broken.join("\n"));
}

/// `make <target>` in a page must be a target of the Makefile.
#[test]
fn every_make_target_the_pages_name_exists() {
    let makefile = std::fs::read_to_string(repo().join("Makefile")).unwrap();
    let targets: BTreeSet<&str> = makefile
        .lines()
        .filter_map(|l| l.split_once(':').map(|(t, _)| t))
        .filter(|t| !t.contains(' '))
        .collect();
    let mut unknown = Vec::new();
    for page in pages() {
        let text = read(&page);
        for (i, _) in text.match_indices("make ") {
            let before = text[..i].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric()) {
                continue; // "cmake", "remake"
            }
            let word: String =
                text[i + 5..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '-').collect();
            // Prose such as "make a", "make every": only words that look like targets.
            let prose = ["a", "an", "the", "every", "it", "them", "sure", "targets"];
            if word.is_empty() || prose.contains(&word.as_str()) {
                continue;
            }
            if !targets.contains(word.as_str()) {
                unknown.push(format!("{}: make {word}", page.display()));
            }
        }
    }
    assert!(unknown.is_empty(), "make targets the docs name but the Makefile lacks:\n{}", unknown.join("\n"));
}
