//! `cargo xtask layers`: the library's module graph, and the check that it stays one-way.
//!
//! The crate is built in layers, bottom first (see README "Layout"): addresses and the
//! `Memory` contract, then `arch` (the only code that executes CP15 instructions and
//! barriers), the generic walker (`table`), the descriptor formats over it, the TLB backends,
//! the gather, and the context-switch, locking and SMP layers on top. [`LAYERS`] lists the
//! top-level modules in that order; every `crate::` path a module names in code (a `use`, or
//! a path in an expression or type; comments and doc links do not count) must point to a
//! module listed *before* it. So the graph has no circle, `arch` names nothing above it, and
//! `table` names no format. Test code (`*tests.rs` files, items under `#[cfg(test)]` or
//! `#[cfg(all(test, ..))]`) is left out: a test may reach anywhere.
//!
//! The same pass measures each library file without its test code: none may be longer than
//! [`MAX_LINES`], so each file keeps one job.
//!
//! The parser is small and exact enough for this crate: it removes comments, strings and
//! char literals, then reads `use` trees (with `{..}` groups, `self`, `super`, `crate`) and
//! `crate::`/`super::` paths. Its unit tests show the check failing on each kind of breach.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Top-level modules, bottom layer first. A module may name only modules before it.
pub const LAYERS: &[&str] = &[
    // plain values: addresses, the walker-to-gather interface, the kernel's memory
    "addr", "sink", "memory",
    // the CPU: registers, barriers, TLB instructions, root registers, switch sequences
    "arch", // the generic walker, then the formats that plug into it
    "table", "short", "lpae",
    // TLB backends and models, the context-switch sequences, the ASID allocator
    "tlb", "switch", "asid",
    // the gather, lock-free and locked address spaces, bring-up
    "gather", "lockless", "locked", "bringup",
    // documentation of hazards; the crate-wide error type (names every error)
    "hazards", "error",
];

/// Longest library file, counted without its test code.
pub const MAX_LINES: usize = 700;

/// One `crate::` reference: the file, its line, and the top-level module it names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    pub file: String,
    pub line: usize,
    pub from: String,
    pub to: String,
    pub path: String,
}

/// Replaces comments, string and char literals by spaces, keeping newlines (so line numbers
/// stay right).
pub fn strip_comments_and_literals(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !(b[i - 1].is_alphanumeric() || b[i - 1] == '_'))
        {
            // raw string r"..." or r#"..."#
            let mut j = i + 1;
            let mut hashes = 0;
            while j < b.len() && b[j] == '#' {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &b[i..j.min(b.len())] {
                out.push(blank(ch));
            }
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // a char literal ('x', '\n', '\u{..}'), else a lifetime or label
            let is_char = match next {
                Some('\\') => true,
                Some(_) => b.get(i + 2) == Some(&'\''),
                None => false,
            };
            if is_char {
                let mut j = i + 1;
                if b[j] == '\\' {
                    j += 2;
                    while j < b.len() && b[j] != '\'' {
                        j += 1;
                    }
                } else {
                    j += 1;
                }
                for _ in i..=j.min(b.len() - 1) {
                    out.push(' ');
                }
                i = j + 1;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// True for a `cfg` predicate that only holds in test builds: `test`, or `all(.., test, ..)`.
fn test_only_cfg(pred: &str) -> bool {
    let p: String = pred.chars().filter(|c| !c.is_whitespace()).collect();
    p == "test" || (p.starts_with("all(") && p[4..p.len() - 1].split(',').any(|x| x == "test"))
}

/// Blanks every item (or field, or statement) under a test-only `#[cfg(..)]`, and returns the
/// names of test-only `mod name;` declarations (their files are test code).
pub fn strip_test_items(code: &str) -> (String, Vec<String>) {
    let mut b: Vec<char> = code.chars().collect();
    let mut test_mods = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == '#' && b.get(i + 1) == Some(&'[') {
            // find the attribute's end
            let start = i;
            let mut depth = 0;
            let mut j = i + 1;
            while j < b.len() {
                match b[j] {
                    '[' | '(' => depth += 1,
                    ']' | ')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            let attr: String = b[i + 2..j.min(b.len())].iter().collect();
            let attr_t = attr.trim();
            let is_test = attr_t
                .strip_prefix("cfg(")
                .and_then(|r| r.strip_suffix(')'))
                .is_some_and(test_only_cfg);
            if !is_test {
                i = j + 1;
                continue;
            }
            // the item: up to `;` or `,` at depth 0, or the end of its first `{}` block
            let mut k = j + 1;
            let (mut paren, mut brace) = (0i32, 0i32);
            let item_start = k;
            while k < b.len() {
                match b[k] {
                    '(' | '[' => paren += 1,
                    ')' | ']' => paren -= 1,
                    '{' => brace += 1,
                    '}' => {
                        brace -= 1;
                        if brace == 0 && paren == 0 {
                            k += 1;
                            break;
                        }
                        if brace < 0 {
                            break;
                        }
                    }
                    ';' | ',' if paren == 0 && brace == 0 => {
                        k += 1;
                        break;
                    }
                    _ => {}
                }
                k += 1;
            }
            let item: String = b[item_start..k.min(b.len())].iter().collect();
            let words: Vec<&str> = item
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .filter(|w| !w.is_empty())
                .collect();
            if let Some(p) = words.iter().position(|w| *w == "mod") {
                if item.trim_end().ends_with(';') {
                    if let Some(name) = words.get(p + 1) {
                        test_mods.push((*name).to_string());
                    }
                }
            }
            let end = k.min(b.len());
            for ch in &mut b[start..end] {
                if *ch != '\n' {
                    *ch = ' ';
                }
            }
            i = k;
            continue;
        }
        i += 1;
    }
    (b.into_iter().collect(), test_mods)
}

/// Expands a `use` tree (the text between `use` and `;`) into full paths.
pub fn expand_use_tree(tree: &str) -> Vec<String> {
    fn go(prefix: &str, t: &str, out: &mut Vec<String>) {
        let t = t.trim();
        if let Some(open) = t.find('{') {
            let head = t[..open].trim().trim_end_matches("::");
            let inner = &t[open + 1..t.rfind('}').unwrap_or(t.len())];
            let base = join(prefix, head);
            let mut depth = 0;
            let mut last = 0;
            let parts: Vec<&str> = {
                let mut v = Vec::new();
                for (idx, ch) in inner.char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            v.push(&inner[last..idx]);
                            last = idx + 1;
                        }
                        _ => {}
                    }
                }
                v.push(&inner[last..]);
                v
            };
            for p in parts {
                if !p.trim().is_empty() {
                    go(&base, p, out);
                }
            }
        } else {
            let path = t.split(" as ").next().unwrap_or(t).trim();
            let full = if path == "self" {
                prefix.to_string()
            } else {
                join(prefix, path)
            };
            out.push(full);
        }
    }
    fn join(a: &str, b: &str) -> String {
        match (a.is_empty(), b.is_empty()) {
            (true, _) => b.to_string(),
            (_, true) => a.to_string(),
            _ => format!("{a}::{b}"),
        }
    }
    let mut out = Vec::new();
    go("", tree, &mut out);
    out
}

/// Resolves a path written in module `module` to an absolute `crate::..` path, or None for
/// a path into another crate (`core::`, `tock_registers::`) or a local name.
fn absolute(module: &[String], path: &str) -> Option<Vec<String>> {
    let segs: Vec<&str> = path.split("::").map(str::trim).collect();
    let mut cur: Vec<String> = module.to_vec();
    let mut it = segs.iter().peekable();
    match it.peek().copied() {
        Some(&"crate") => {
            it.next();
            cur.clear();
        }
        Some(&"super") | Some(&"self") => {
            while let Some(s) = it.peek().copied() {
                if *s == "super" {
                    cur.pop();
                } else if *s != "self" {
                    break;
                }
                it.next();
            }
        }
        _ => return None,
    }
    cur.extend(it.map(|s| s.to_string()));
    Some(cur)
}

/// Every `crate::`, `super::` and `self::` reference in stripped code, with its line.
pub fn references(code: &str) -> Vec<(usize, String)> {
    let mut refs = Vec::new();
    let b: Vec<char> = code.chars().collect();
    let line_of = |pos: usize| b[..pos].iter().filter(|&&c| c == '\n').count() + 1;
    let word_at = |pos: usize, w: &str| {
        let wc: Vec<char> = w.chars().collect();
        b.len() >= pos + wc.len()
            && b[pos..pos + wc.len()] == wc[..]
            && (pos == 0
                || !(b[pos - 1].is_alphanumeric() || b[pos - 1] == '_' || b[pos - 1] == ':'))
            && b.get(pos + wc.len())
                .is_none_or(|c| !(c.is_alphanumeric() || *c == '_'))
    };
    let mut i = 0;
    while i < b.len() {
        if word_at(i, "use") {
            let mut j = i + 3;
            while j < b.len() && b[j] != ';' {
                j += 1;
            }
            let tree: String = b[i + 3..j.min(b.len())].iter().collect();
            for p in expand_use_tree(&tree) {
                refs.push((line_of(i), p));
            }
            i = j;
            continue;
        }
        for root in ["crate", "super", "self"] {
            if word_at(i, root) && b.get(i + root.len()) == Some(&':') {
                let mut j = i;
                while j < b.len() && (b[j].is_alphanumeric() || b[j] == '_' || b[j] == ':') {
                    j += 1;
                }
                let p: String = b[i..j].iter().collect();
                refs.push((line_of(i), p.trim_end_matches(':').to_string()));
                i = j;
                break;
            }
        }
        i += 1;
    }
    refs
}

/// A library source file: its module path and its code without test items.
struct SourceFile {
    rel: String,
    module: Vec<String>,
    code: String,
}

fn module_of(rel: &str) -> Vec<String> {
    let p = rel.trim_start_matches("src/").trim_end_matches(".rs");
    let mut m: Vec<String> = p.split('/').map(str::to_string).collect();
    if matches!(m.last().map(String::as_str), Some("mod" | "lib")) {
        m.pop();
    }
    m
}

fn collect(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) -> Result<(), String> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            collect(&p, root, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p
                .strip_prefix(root)
                .map_err(|e| e.to_string())?
                .to_string_lossy()
                .replace('\\', "/");
            let text = fs::read_to_string(&p).map_err(|e| format!("{rel}: {e}"))?;
            out.push((rel, text));
        }
    }
    Ok(())
}

/// Reads `src/` under `root` and keeps the library files (test files dropped).
fn library_files(files: &[(String, String)]) -> Vec<SourceFile> {
    let mut test_files: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut parsed = Vec::new();
    for (rel, text) in files {
        let stripped = strip_comments_and_literals(text);
        let (code, test_mods) = strip_test_items(&stripped);
        let module = module_of(rel);
        for m in test_mods {
            let mut t = module.clone();
            t.push(m);
            test_files.insert(t);
        }
        parsed.push(SourceFile {
            rel: rel.clone(),
            module,
            code,
        });
    }
    parsed
        .into_iter()
        .filter(|f| {
            let name = f.rel.rsplit('/').next().unwrap_or("");
            !name.ends_with("tests.rs")
                && !test_files
                    .iter()
                    .any(|t| f.module.len() >= t.len() && f.module[..t.len()] == t[..])
        })
        .collect()
}

/// The edges between top-level modules, and the oversized files, of the given sources.
pub fn analyse(files: &[(String, String)]) -> (Vec<Edge>, Vec<(String, usize)>) {
    let lib = library_files(files);
    let mut edges = Vec::new();
    let mut long = Vec::new();
    for f in &lib {
        let lines = f.code.trim_end().lines().count();
        if lines > MAX_LINES {
            long.push((f.rel.clone(), lines));
        }
        let Some(from) = f.module.first() else {
            continue;
        };
        for (line, path) in references(&f.code) {
            let Some(abs) = absolute(&f.module, &path) else {
                continue;
            };
            let Some(to) = abs.first() else {
                continue;
            };
            if to != from && to.chars().next().is_some_and(|c| c.is_lowercase()) {
                edges.push(Edge {
                    file: f.rel.clone(),
                    line,
                    from: from.clone(),
                    to: to.clone(),
                    path: format!("crate::{}", abs.join("::")),
                });
            }
        }
    }
    edges.sort();
    (edges, long)
}

/// Every breach of the layering and the size limit, as messages.
pub fn breaches(edges: &[Edge], long: &[(String, usize)]) -> Vec<String> {
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut out = Vec::new();
    let mut unknown = BTreeSet::new();
    for e in edges {
        match (rank(&e.from), rank(&e.to)) {
            (Some(a), Some(b)) if b < a => {}
            (Some(_), Some(_)) => out.push(format!(
                "{}:{}: `{}` names `{}` ({}), which is not below it",
                e.file, e.line, e.from, e.path, e.to
            )),
            (None, _) => {
                unknown.insert(e.from.clone());
            }
            (_, None) => {
                unknown.insert(e.to.clone());
            }
        }
    }
    for m in unknown {
        out.push(format!(
            "module `{m}` is not placed in xtask/src/layers.rs LAYERS"
        ));
    }
    for (f, n) in long {
        out.push(format!(
            "{f}: {n} lines of library code (limit {MAX_LINES}); split it by job"
        ));
    }
    out
}

/// The top-level module graph, one line per module: `from -> to, to`.
pub fn graph(edges: &[Edge]) -> String {
    let mut g: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in edges {
        g.entry(&e.from).or_default().insert(&e.to);
    }
    let mut s = String::new();
    for m in LAYERS {
        let deps: Vec<&str> = g
            .get(m)
            .map(|d| d.iter().copied().collect())
            .unwrap_or_default();
        s.push_str(&format!(
            "  {m} -> {}\n",
            if deps.is_empty() {
                "-".into()
            } else {
                deps.join(", ")
            }
        ));
    }
    s
}

fn read_tree(root: &Path) -> Result<Vec<(String, String)>, String> {
    let mut files = Vec::new();
    collect(&root.join("src"), root, &mut files)?;
    Ok(files)
}

/// The check run by `cargo xtask test`: Ok with a one-line summary, or the breaches.
pub fn check(root: &Path) -> Result<String, Vec<String>> {
    let files = read_tree(root).map_err(|e| vec![e])?;
    let (edges, long) = analyse(&files);
    let b = breaches(&edges, &long);
    if b.is_empty() {
        let pairs: BTreeSet<(&str, &str)> = edges
            .iter()
            .map(|e| (e.from.as_str(), e.to.as_str()))
            .collect();
        Ok(format!(
            "{} modules, {} module dependencies, all downward; no library file over {MAX_LINES} lines",
            LAYERS.len(),
            pairs.len()
        ))
    } else {
        Err(b)
    }
}

/// `cargo xtask layers`: prints the graph and the check's verdict.
pub fn cmd_layers(root: &Path) -> i32 {
    let files = match read_tree(root) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let (edges, long) = analyse(&files);
    println!("module graph (bottom layer first; `a -> b` means a names b):");
    print!("{}", graph(&edges));
    let b = breaches(&edges, &long);
    for m in &b {
        println!("{m}");
    }
    i32::from(!b.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> Vec<(String, String)> {
        files
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn use_trees_expand() {
        assert_eq!(
            expand_use_tree(" crate::{addr::{PhysAddr, VirtAddr as V}, tlb::self, sink}"),
            vec![
                "crate::addr::PhysAddr",
                "crate::addr::VirtAddr",
                "crate::tlb::self",
                "crate::sink"
            ]
        );
        assert_eq!(
            expand_use_tree("super::x::{self, Y}"),
            vec!["super::x", "super::x::Y"]
        );
    }

    #[test]
    fn comments_strings_and_tests_do_not_count() {
        let src = "//! see [`crate::tlb::Asid`]\n\
                   /* crate::gather */ const S: &str = \"crate::tlb\";\n\
                   const C: char = '\"'; fn f<'a>(x: &'a u8) {}\n\
                   #[cfg(test)]\nmod tests { use crate::tlb::Asid; }\n\
                   #[cfg(all(test, feature = \"x\"))]\nmod more;\n\
                   struct P { #[cfg(test)] probe: crate::tlb::Probe, a: u8 }\n\
                   use crate::addr::PhysAddr;\n";
        let files = tree(&[
            ("src/arch/mmu.rs", src),
            ("src/arch/mmu/more.rs", "use crate::tlb::X;"),
        ]);
        let (edges, long) = analyse(&files);
        assert!(long.is_empty());
        assert_eq!(edges.len(), 1, "{edges:?}");
        assert_eq!(edges[0].to, "addr");
        assert_eq!(edges[0].line, 9);
    }

    #[test]
    fn an_upward_import_is_a_breach() {
        // arch naming the TLB layer, through `use`, an inline path and `super::super`
        for src in [
            "use crate::tlb::Asid;",
            "fn f() { crate::tlb::flush(); }",
            "use crate::{addr::PhysAddr, switch::short_ttbr};",
        ] {
            let (edges, long) = analyse(&tree(&[("src/arch/mmu.rs", src)]));
            let b = breaches(&edges, &long);
            assert_eq!(b.len(), 1, "{src}: {b:?}");
            assert!(b[0].contains("not below it"), "{b:?}");
        }
        let (edges, long) = analyse(&tree(&[(
            "src/table/space/map.rs",
            "use super::super::super::short::Short;",
        )]));
        assert_eq!(breaches(&edges, &long).len(), 1);
        // the generic walker naming a format is a breach; a format naming the walker is not
        let (edges, long) = analyse(&tree(&[
            ("src/table/mod.rs", "impl Sealed for crate::short::Short {}"),
            ("src/short/mod.rs", "use crate::table::Format;"),
        ]));
        let b = breaches(&edges, &long);
        assert_eq!(b.len(), 1, "{b:?}");
        assert!(b[0].starts_with("src/table/mod.rs:1"), "{b:?}");
        // a cfg(any(test, ..)) item is library code
        let (edges, long) = analyse(&tree(&[(
            "src/arch/mmu.rs",
            "#[cfg(any(test, feature = \"std\"))]\nuse crate::tlb::Recorder;",
        )]));
        assert_eq!(breaches(&edges, &long).len(), 1);
    }

    #[test]
    fn long_files_and_unplaced_modules_are_breaches() {
        let long_src = "fn f() {}\n".repeat(MAX_LINES + 1);
        let with_tests = format!(
            "{}#[cfg(test)]\nmod tests {{\n{}}}\n",
            "fn f() {}\n".repeat(10),
            "fn g() {}\n".repeat(MAX_LINES)
        );
        let (edges, long) = analyse(&tree(&[
            ("src/gather/mod.rs", &long_src),
            ("src/gather/batch.rs", &with_tests),
            ("src/newthing.rs", "use crate::addr::X;"),
        ]));
        let b = breaches(&edges, &long);
        assert_eq!(b.len(), 2, "{b:?}");
        assert!(b.iter().any(|m| m.contains("newthing")));
        assert!(b.iter().any(|m| m.starts_with("src/gather/mod.rs")));
    }

    #[test]
    fn the_crate_is_layered() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        if let Err(b) = check(root) {
            panic!("{}", b.join("\n"));
        }
    }
}
