//! `cargo xtask mutants [--file F]... [--shard K/N] [--tests FILTER]... [--skip FILTER]...
//! [--iterate] [--jobs N] [--timeout S]`: a mutation run (`cargo mutants`) over the files
//! whose tests issue 15 asks to be tight, with the features the suite needs, then the score
//! and every missed mutant.
//!
//! Not part of `cargo xtask test`: a full run takes hours on two cores. Shards (`--shard
//! 1/4` ...) split it; `--tests` (run only tests whose names contain one of the filters) and
//! `--skip` (leave out tests whose names contain it) narrow the tests run per mutant. That is
//! faster, but a mutant only the left-out tests would catch then counts as missed, so the
//! score can only come out lower. The two-pass way to a full-suite score in less time: a
//! narrowed pass, then `--iterate` with no narrowing, which retests only the mutants the first
//! pass did not catch (a mutant the narrowed tests catch, the whole suite catches too; one
//! that timed out is a detection too, and is not retested).
//! Mutants that are equivalent are excluded in `.cargo/mutants.toml`, each with its reason
//! (and listed in `mutants-equivalent.md`).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{cargo, root};

/// The files issue 15 names; `--file` replaces them.
/// (After issue 16 moved code: the instruction values of `tlb::armv7` live in
/// `arch/insn.rs`, the CPU identification of `tlb::select` in `arch/cpu.rs`, and
/// `table/space.rs` is `table/space/`. Test files are excluded in `.cargo/mutants.toml`.)
const DEFAULT_FILES: &[&str] = &[
    "src/gather/*.rs",
    "src/tlb/armv7.rs",
    "src/arch/insn.rs",
    "src/tlb/select.rs",
    "src/arch/cpu.rs",
    "src/tlb/errata.rs",
    "src/table/space/*.rs",
    "src/asid.rs",
];

fn have_cargo_mutants() -> bool {
    cargo()
        .args(["mutants", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Adds the mutants that timed out in the run in `out` (a `mutants.out` directory) to its
/// `previously_caught.txt`, which `cargo mutants --iterate` skips (it retests timeouts
/// otherwise: each one costs the whole timeout again, for a result that cannot change from
/// detected to missed). Returns how many were added.
fn carry_timeouts(out: &Path) -> usize {
    let timeout = lines(&out.join("timeout.txt"));
    if timeout.is_empty() {
        return 0;
    }
    let path = out.join("previously_caught.txt");
    let mut kept: BTreeSet<String> = lines(&path).into_iter().collect();
    let before = kept.len();
    kept.extend(timeout);
    let added = kept.len() - before;
    let text: String = kept.iter().map(|m| format!("{m}\n")).collect();
    match fs::write(&path, text) {
        Ok(()) => added,
        Err(e) => {
            println!(
                "==> cannot write {}: {e}; timeouts will be retested",
                path.display()
            );
            0
        }
    }
}

/// Score line and the missed mutants from a `mutants.out` directory.
fn summarize(out: &Path) -> i32 {
    // `--iterate` keeps what earlier runs caught in `previously_caught.txt`.
    let mut caught = lines(&out.join("caught.txt"));
    caught.extend(lines(&out.join("previously_caught.txt")));
    caught.sort();
    caught.dedup();
    let missed = lines(&out.join("missed.txt"));
    let timeout = lines(&out.join("timeout.txt"));
    let unviable = lines(&out.join("unviable.txt"));
    let viable = caught.len() + missed.len() + timeout.len();
    if viable == 0 {
        println!(
            "mutants: no viable mutant was tested (see {})",
            out.display()
        );
        return 1;
    }
    // A mutant that makes the tests hang is detected (the run never passes).
    let detected = caught.len() + timeout.len();
    let score = 100.0 * detected as f64 / viable as f64;
    println!(
        "mutation score: {score:.1}% ({detected} of {viable} viable mutants caught: {} caught, \
         {} timed out; {} missed; {} unviable)",
        caught.len(),
        timeout.len(),
        missed.len(),
        unviable.len()
    );
    if !missed.is_empty() {
        println!("missed mutants:");
        for m in &missed {
            println!("  {m}");
        }
    }
    i32::from(!missed.is_empty())
}

pub fn cmd_mutants(args: &[String]) -> i32 {
    let mut files: Vec<String> = Vec::new();
    let mut shard: Option<String> = None;
    let mut tests: Vec<String> = Vec::new();
    let mut skip: Vec<String> = Vec::new();
    let mut iterate = false;
    let mut jobs: Option<String> = None;
    let mut timeout: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next().cloned().ok_or_else(|| {
                eprintln!("{name} needs a value");
                2
            })
        };
        let r = match a.as_str() {
            "--file" => value("--file").map(|v| files.push(v)),
            "--shard" => value("--shard").map(|v| shard = Some(v)),
            "--tests" => value("--tests").map(|v| tests.push(v)),
            "--skip" => value("--skip").map(|v| skip.push(v)),
            "--iterate" => {
                iterate = true;
                Ok(())
            }
            "--jobs" => value("--jobs").map(|v| jobs = Some(v)),
            "--timeout" => value("--timeout").map(|v| timeout = Some(v)),
            _ => {
                eprintln!("unknown argument {a}");
                Err(2)
            }
        };
        if let Err(code) = r {
            return code;
        }
    }
    if let Some(s) = &shard {
        let ok = s
            .split_once('/')
            .and_then(|(k, n)| Some((k.parse::<u32>().ok()?, n.parse::<u32>().ok()?)))
            .is_some_and(|(k, n)| n > 0 && k < n);
        if !ok {
            eprintln!("--shard wants K/N with 0 <= K < N, got {s}");
            return 2;
        }
    }
    if files.is_empty() {
        files = DEFAULT_FILES.iter().map(|f| f.to_string()).collect();
    }

    if !have_cargo_mutants() {
        println!("==> cargo-mutants is not installed: cargo install --locked cargo-mutants");
        let mut install = cargo();
        install.args(["install", "--locked", "cargo-mutants"]);
        if !crate::step("cargo install --locked cargo-mutants", install) {
            return 1;
        }
    }

    // Its own target directory (kept between runs, so later runs build incrementally) and
    // its own output directory per shard.
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    // One output directory per file set and shard, so runs side by side keep their results.
    let slug: String = files
        .join("+")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let out = base.join(match &shard {
        Some(s) => format!("mutants-{slug}-{}", s.replace('/', "-of-")),
        None => format!("mutants-{slug}"),
    });
    let mut cmd: Command = cargo();
    cmd.args([
        "mutants",
        "--package",
        "armv7-mm",
        "--all-features",
        "--no-shuffle",
    ])
    .arg("--output")
    .arg(&out);
    // One job builds in a target directory kept between runs (later runs build
    // incrementally). Parallel jobs must not share one: each would run the test binary
    // another job's mutant just built, so cargo-mutants gives every job's copy of the tree
    // its own (nothing inherited from the caller's `CARGO_TARGET_DIR`).
    let parallel = jobs.as_deref().is_some_and(|j| j != "1");
    if parallel {
        cmd.env_remove("CARGO_TARGET_DIR");
    } else {
        cmd.env("CARGO_TARGET_DIR", base.join("mutants-build"));
    }
    for f in &files {
        cmd.args(["--file", f]);
    }
    if let Some(s) = &shard {
        cmd.args(["--shard", s]);
    }
    if let Some(j) = &jobs {
        cmd.args(["--jobs", j]);
    }
    if let Some(t) = &timeout {
        cmd.args(["--timeout", t]);
    }
    if iterate {
        // Retest only what the run in the same output directory did not catch. A timeout
        // is a detection, and retesting it costs the whole timeout again: count it caught.
        let carried = carry_timeouts(&out.join("mutants.out"));
        if carried > 0 {
            println!(
                "==> {carried} timed-out mutants of the last run count as caught, not retested"
            );
        }
        cmd.arg("--iterate");
    }
    if !tests.is_empty() || !skip.is_empty() {
        // Passed to the test binaries: only the tests whose names contain one of the
        // filters run, minus those whose names contain a `--skip` filter.
        // `--lib` for every cargo call: the build step then compiles only the unit-test
        // binary, not the library a second time for doctests that do not run.
        cmd.args(["--cargo-arg", "--lib", "--", "--"]).args(&tests);
        for s in &skip {
            cmd.args(["--skip", s]);
        }
    }
    println!(
        "==> cargo mutants over {} (output in {})",
        files.join(" "),
        out.display()
    );
    // cargo mutants exits non-zero when a mutant is missed; the summary says what happened.
    let _ = crate::step("cargo mutants", cmd);
    summarize(&out.join("mutants.out"))
}

/// The hostile-input property harness (`src/table/hostile_tests.rs`): a step of
/// `cargo xtask test`, bounded (about 20-45 s on two shared cores); `long` runs ten times the
/// operations. It prints its operation counts.
pub fn hostile_command(long: bool) -> Command {
    let mut c = cargo();
    c.args([
        "test",
        "-p",
        "armv7-mm",
        "--all-features",
        "--lib",
        "table::hostile_tests",
        "--",
        "--ignored",
        "--nocapture",
    ]);
    if long {
        c.env("ARMV7_MM_HOSTILE_LONG", "1");
    }
    c
}

/// `cargo xtask hostile [--long]`: the harness alone.
pub fn cmd_hostile(args: &[String]) -> i32 {
    let long = match args {
        [] => false,
        [a] if a == "--long" => true,
        _ => {
            eprintln!("usage: cargo xtask hostile [--long]");
            return 2;
        }
    };
    i32::from(!crate::step("hostile-input harness", hostile_command(long)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterate_counts_the_last_runs_timeouts_caught_once() {
        let dir = std::env::temp_dir().join(format!("xtask-carry-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("previously_caught.txt"), "b\na\n").unwrap();
        fs::write(dir.join("timeout.txt"), "c\na\n").unwrap();
        assert_eq!(carry_timeouts(&dir), 1);
        assert_eq!(lines(&dir.join("previously_caught.txt")), ["a", "b", "c"]);
        // Again: nothing new.
        assert_eq!(carry_timeouts(&dir), 0);
        fs::remove_file(dir.join("timeout.txt")).unwrap();
        assert_eq!(carry_timeouts(&dir), 0);
        fs::remove_dir_all(&dir).unwrap();
    }
}
