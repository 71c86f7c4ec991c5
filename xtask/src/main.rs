//! `cargo xtask`: builds the armv7-mm test kernels and boots them in QEMU.
//!
//! Commands:
//! - `cargo xtask test [--filter NAME] [--jobs N] [--skip-host] [--long]`: `rust-version`
//!   against the pinned toolchain, the README sketch against `tests/readme.rs`,
//!   `cargo fmt --check`, `cargo clippy` (host, warnings denied, and the test kernels for the
//!   ARM target, once per board), `cargo doc` for both targets (warnings denied),
//!   `cargo publish --dry-run -p armv7-mm`, the host tests, the hostile-input harness
//!   (`--long`: ten times the steps), then every boot test in every QEMU configuration it declares. Prints one line per
//!   result and ends with `N passed, N failed`.
//! - `cargo xtask mutants [--file F]... [--shard K/N]`: a mutation run (see `mutants.rs`);
//!   not part of `test`. `cargo xtask hostile [--long]`: the hostile-input harness alone
//!   (a step of `test` too; `--long` there runs its long mode).
//! - `cargo xtask run`: boots the demo kernel and shows its console.
//! - `cargo xtask bench [--runs N]`: boots the benchmark kernel `tests/bench.rs` (not a boot
//!   test: it has no `qemu:` header) under `-icount shift=0` N times (at least 2), checks
//!   every run prints the same numbers, and prints them with a Markdown table (BENCHMARKS.md).
//! - `cargo xtask qemu <test> [--machine M] [--cpu C] [--smp N] [--mem MiB] [--arg A]... [--gdb]`: boots one
//!   test kernel interactively (`Ctrl-A x` quits QEMU). `--gdb` adds `-s -S`: QEMU waits for
//!   `gdb-multiarch <elf> -ex 'target remote :1234'`.
//!
//! A boot test is a file `tests/<name>.rs` whose doc header declares how to boot it:
//!
//! ```text
//! //! qemu: machine=virt,vexpress-a9,raspi2b cpu=cortex-a15,cortex-a7 smp=1,4 mem=128
//! //! timeout: 60
//! //! expect: fail "text the console must show"
//! //! variant: <suffix> [machine=<m>,...] arg=<word> ... expect=fail "text"
//! ```
//!
//! `qemu:` gives the configurations (the cross product of the lists; `mem` in MiB). The
//! machine axis defaults to `virt`, the only machine where `cpu=` applies: `vexpress-a9` is
//! always a Cortex-A9 MPCore and `raspi2b` four Cortex-A7s with 1 GiB (`smp` 4; `mem` is
//! then what the kernel is told to use). Each machine's kernels are built with its
//! `board-*` feature of the tests package (`rt::board`: link address, console, secondary
//! start). A variant with `machine=` boots only on those of the test's machines. `expect:`
//! is `pass` (default), `fail` (the kernel must exit non-zero, and print the text if given)
//! or `timeout`. A `variant:` line boots the same kernel again with extra semihosting
//! arguments, under its own name `<name>:<suffix>` and its own expectation: that is how a test
//! shows its teeth (the same scenario with the bug switched on must fail).

mod layers;
mod mutants;

use std::collections::BTreeMap;
use std::env;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{exit, Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const TARGET: &str = "armv7a-none-eabi";
const TESTS_PACKAGE: &str = "armv7-mm-tests";
const DEFAULT_TIMEOUT_S: u64 = 60;

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("test") => cmd_test(&args[1..]),
        Some("run") => cmd_run(&args[1..]),
        Some("qemu") => cmd_qemu(&args[1..]),
        Some("bench") => cmd_bench(&args[1..]),
        Some("mutants") => mutants::cmd_mutants(&args[1..]),
        Some("hostile") => mutants::cmd_hostile(&args[1..]),
        Some("layers") => layers::cmd_layers(&root()),
        _ => {
            eprintln!(
                "usage: cargo xtask <test [--filter NAME] [--jobs N] [--skip-host] | run | \
                 bench [--runs N] | mutants [--file F]... [--shard K/N] | hostile [--long] | layers | qemu <test> [--machine M] [--cpu C] [--smp N] [--mem MiB] [--arg A]... [--gdb]>"
            );
            2
        }
    };
    exit(code);
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs a command with inherited output; true if it succeeded.
fn step(name: &str, mut cmd: Command) -> bool {
    println!("==> {name}");
    let _ = io::stdout().flush();
    match cmd.status() {
        Ok(s) if s.success() => true,
        Ok(s) => {
            println!("{name} ... FAILED ({s})");
            false
        }
        Err(e) => {
            println!("{name} ... FAILED (could not run: {e})");
            false
        }
    }
}

/// The MSRV check: the library's `rust-version`, as `cargo metadata` reports it, must be the
/// toolchain `rust-toolchain.toml` pins (major.minor), which every other step of
/// `cargo xtask test` builds and tests with. So the declared MSRV is exactly the version
/// the suite verifies (installing and running an older toolchain as well would double CI
/// time on these machines; see CHANGELOG.md). Returns the version.
fn check_rust_version() -> Result<String, String> {
    let toolchain = fs::read_to_string(root().join("rust-toolchain.toml"))
        .map_err(|e| format!("rust-toolchain.toml: {e}"))?;
    let out = cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err("cargo metadata failed".into());
    }
    rust_version_matches(&String::from_utf8_lossy(&out.stdout), &toolchain)
}

/// The README's "Use it in your kernel" sketch must be, line for line, the region of
/// `tests/readme.rs` between `// README-BEGIN` and `// README-END` (each side with its
/// common indentation stripped): that kernel is booted by this suite, so the sketch cannot
/// drift from the API.
fn check_readme_sketch() -> Result<(), String> {
    let read = |p: &str| fs::read_to_string(root().join(p)).map_err(|e| format!("{p}: {e}"));
    readme_sketch_matches(&read("README.md")?, &read("tests/readme.rs")?)
}

/// [`check_readme_sketch`] on the texts.
fn readme_sketch_matches(readme: &str, kernel: &str) -> Result<(), String> {
    let after = readme
        .split_once("## Use it in your kernel")
        .ok_or("README.md has no \"## Use it in your kernel\" section")?
        .1;
    let mut lines = after.lines().enumerate();
    lines
        .find(|(_, l)| l.trim_start().starts_with("```rust"))
        .ok_or("README.md: no ```rust block in \"Use it in your kernel\"")?;
    let sketch: Vec<&str> = lines
        .by_ref()
        .take_while(|(_, l)| l.trim() != "```")
        .map(|(_, l)| l)
        .collect();
    let mut region = kernel.lines().skip_while(|l| l.trim() != "// README-BEGIN");
    if region.next().is_none() {
        return Err("tests/readme.rs has no `// README-BEGIN` line".into());
    }
    let region: Vec<&str> = region.take_while(|l| l.trim() != "// README-END").collect();
    let (sketch, region) = (dedent(&sketch), dedent(&region));
    for (i, (a, b)) in sketch.iter().zip(&region).enumerate() {
        if a != b {
            return Err(format!(
                "README sketch line {} differs from the tests/readme.rs region:\n  README: {a}\n  kernel: {b}",
                i + 1
            ));
        }
    }
    if sketch.len() != region.len() {
        return Err(format!(
            "README sketch has {} lines, the tests/readme.rs region {}",
            sketch.len(),
            region.len()
        ));
    }
    Ok(())
}

/// The lines without their common leading whitespace (blank lines become empty).
fn dedent(lines: &[&str]) -> Vec<String> {
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| l.get(indent..).unwrap_or("").trim_end().to_string())
        .collect()
}

/// [`check_rust_version`] on the texts: `cargo metadata` JSON and `rust-toolchain.toml`.
fn rust_version_matches(json: &str, toolchain: &str) -> Result<String, String> {
    let channel = toolchain
        .lines()
        .find_map(|l| {
            let v = l.trim().strip_prefix("channel")?.trim().strip_prefix('=')?;
            Some(v.trim().trim_matches('"').to_string())
        })
        .ok_or("rust-toolchain.toml pins no channel")?;
    // The library's package object (`{"name":"armv7-mm","version":...`, not a dependency
    // entry of the tests package); `rust_version` is its last key, so the first one after
    // its start is its own (`null` when undeclared).
    let at = json
        .find("\"name\":\"armv7-mm\",\"version\"")
        .ok_or("cargo metadata lists no armv7-mm package")?;
    let key = "\"rust_version\":";
    let value = json[at..]
        .find(key)
        .map(|k| &json[at + k + key.len()..])
        .ok_or("cargo metadata gives no rust_version")?;
    let declared = value
        .strip_prefix('"')
        .and_then(|v| v.split('"').next())
        .ok_or("armv7-mm declares no rust-version")?
        .to_string();
    let major_minor = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
    if major_minor(&declared) == major_minor(&channel) {
        Ok(declared)
    } else {
        Err(format!(
            "Cargo.toml says rust-version = {declared}, rust-toolchain.toml pins {channel}"
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Test declarations

#[derive(Clone, Debug, PartialEq)]
enum Expect {
    Pass,
    Fail(Option<String>),
    Timeout,
}

#[derive(Clone, Debug)]
struct Boot {
    /// Display name: `<test>` or `<test>:<variant>`.
    name: String,
    /// The kernel binary.
    bin: String,
    /// QEMU machine (`-M`): one of [`MACHINES`].
    machine: String,
    cpu: String,
    smp: u32,
    mem: u32,
    args: Vec<String>,
    expect: Expect,
    timeout: Duration,
}

impl Boot {
    fn label(&self) -> String {
        let mut s = if self.machine == "virt" {
            format!("{} [{}, smp {}", self.name, self.cpu, self.smp)
        } else {
            format!(
                "{} [{}, {}, smp {}",
                self.name, self.machine, self.cpu, self.smp
            )
        };
        if self.mem != 128 {
            s += &format!(", {} MiB", self.mem);
        }
        s + "]"
    }
}

/// A QEMU machine the boot tests run on.
struct Machine {
    name: &'static str,
    /// The tests package feature that builds kernels for it (`None`: the default, `virt`).
    feature: Option<&'static str>,
    /// The CPU the board always has (`None`: the header's `cpu=` list applies).
    cpu: Option<&'static str>,
    /// The CPU count the board always has.
    smp: Option<u32>,
    /// The RAM size QEMU must be given, in MiB (`None`: the header's `mem`).
    ram_mib: Option<u32>,
}

const MACHINES: [Machine; 3] = [
    Machine {
        name: "virt",
        feature: None,
        cpu: None,
        smp: None,
        ram_mib: None,
    },
    Machine {
        name: "vexpress-a9",
        feature: Some("board-vexpress-a9"),
        cpu: Some("cortex-a9"),
        smp: None,
        ram_mib: None,
    },
    Machine {
        name: "raspi2b",
        feature: Some("board-raspi2b"),
        cpu: Some("cortex-a7"),
        smp: Some(4),
        ram_mib: Some(1024),
    },
];

fn machine(name: &str) -> Option<&'static Machine> {
    MACHINES.iter().find(|m| m.name == name)
}

fn parse_expect(s: &str) -> Result<Expect, String> {
    let s = s.trim();
    let (word, rest) = s.split_once(' ').unwrap_or((s, ""));
    let text = rest.trim().trim_matches('"');
    match word {
        "pass" => Ok(Expect::Pass),
        "timeout" => Ok(Expect::Timeout),
        "fail" => Ok(Expect::Fail((!text.is_empty()).then(|| text.to_string()))),
        _ => Err(format!("unknown expectation '{word}'")),
    }
}

/// Reads the `//!` header of `tests/<bin>.rs`; `None` if it is not a boot test.
fn parse_test(path: &Path) -> Result<Option<Vec<Boot>>, String> {
    let bin = path.file_stem().unwrap().to_string_lossy().to_string();
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let header: Vec<&str> = text
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| l.trim_start_matches("//!").trim())
        .collect();
    let Some(qemu) = header.iter().find_map(|l| l.strip_prefix("qemu:")) else {
        return Ok(None);
    };
    let err = |m: String| format!("{}: {m}", path.display());
    let mut machines = vec!["virt".to_string()];
    let mut cpus = vec!["cortex-a15".to_string()];
    let mut smps = vec![1u32];
    let mut mem = 128u32;
    for kv in qemu.split_whitespace() {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| err(format!("bad qemu item '{kv}'")))?;
        match k {
            "machine" => {
                machines = v.split(',').map(str::to_string).collect();
                if let Some(m) = machines.iter().find(|m| machine(m).is_none()) {
                    return Err(err(format!("unknown machine '{m}'")));
                }
            }
            "cpu" => cpus = v.split(',').map(str::to_string).collect(),
            "smp" => {
                smps = v
                    .split(',')
                    .map(|n| n.parse().map_err(|_| err(format!("bad smp '{n}'"))))
                    .collect::<Result<_, _>>()?
            }
            "mem" => mem = v.parse().map_err(|_| err(format!("bad mem '{v}'")))?,
            _ => return Err(err(format!("unknown qemu key '{k}'"))),
        }
    }
    let mut expect = Expect::Pass;
    let mut timeout = Duration::from_secs(DEFAULT_TIMEOUT_S);
    // (suffix, args, expect, machines: None = all of the test's)
    type Variant = (String, Vec<String>, Expect, Option<Vec<String>>);
    let mut variants: Vec<Variant> = Vec::new();
    for l in &header {
        if let Some(e) = l.strip_prefix("expect:") {
            expect = parse_expect(e).map_err(err)?;
        } else if let Some(t) = l.strip_prefix("timeout:") {
            let s: u64 = t
                .trim()
                .parse()
                .map_err(|_| err(format!("bad timeout '{t}'")))?;
            timeout = Duration::from_secs(s);
        } else if let Some(v) = l.strip_prefix("variant:") {
            let v = v.trim();
            let (suffix, rest) = v.split_once(' ').unwrap_or((v, ""));
            let (args_part, exp) = match rest.find("expect=") {
                Some(i) => (&rest[..i], parse_expect(&rest[i + 7..]).map_err(err)?),
                None => (rest, Expect::Pass),
            };
            let mut only: Option<Vec<String>> = None;
            let mut args = Vec::new();
            for a in args_part.split_whitespace() {
                if let Some(m) = a.strip_prefix("machine=") {
                    let list: Vec<String> = m.split(',').map(str::to_string).collect();
                    if let Some(m) = list.iter().find(|m| !machines.contains(m)) {
                        return Err(err(format!(
                            "variant {suffix}: machine '{m}' is not one of the test's"
                        )));
                    }
                    only = Some(list);
                } else if let Some(w) = a.strip_prefix("arg=") {
                    args.push(w.to_string());
                } else {
                    return Err(err(format!("bad variant item '{a}'")));
                }
            }
            variants.push((suffix.to_string(), args, exp, only));
        }
    }
    let mut boots = Vec::new();
    let all = std::iter::once((String::new(), Vec::new(), expect, None)).chain(variants);
    for (suffix, args, expect, only) in all {
        for m in &machines {
            if only.as_ref().is_some_and(|o| !o.contains(m)) {
                continue;
            }
            let board = machine(m).expect("checked above");
            let board_cpus = match board.cpu {
                Some(c) => vec![c.to_string()],
                None => cpus.clone(),
            };
            let board_smps = match board.smp {
                Some(n) => vec![n],
                None => smps.clone(),
            };
            for cpu in &board_cpus {
                for &smp in &board_smps {
                    boots.push(Boot {
                        name: if suffix.is_empty() {
                            bin.clone()
                        } else {
                            format!("{bin}:{suffix}")
                        },
                        bin: bin.clone(),
                        machine: m.clone(),
                        cpu: cpu.clone(),
                        smp,
                        mem,
                        args: args.clone(),
                        expect: expect.clone(),
                        timeout,
                    });
                }
            }
        }
    }
    Ok(Some(boots))
}

fn discover() -> Result<Vec<Boot>, String> {
    let dir = root().join("tests");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs") && p.is_file())
        .collect();
    files.sort();
    let manifest = fs::read_to_string(dir.join("Cargo.toml")).map_err(|e| e.to_string())?;
    let mut boots = Vec::new();
    for f in files {
        if let Some(b) = parse_test(&f)? {
            let file = f.file_name().unwrap().to_string_lossy().to_string();
            if !manifest.contains(&format!("path = \"{file}\"")) {
                return Err(format!(
                    "tests/{file} declares a boot test but has no [[bin]] in tests/Cargo.toml"
                ));
            }
            boots.extend(b);
        }
    }
    Ok(boots)
}

// ---------------------------------------------------------------------------------------
// QEMU

fn qemu_binary() -> Result<String, String> {
    if let Ok(q) = env::var("QEMU_SYSTEM_ARM") {
        return Ok(q);
    }
    let found = |name: &str| {
        env::var_os("PATH")
            .map(|p| env::split_paths(&p).any(|d| d.join(name).is_file()))
            .unwrap_or(false)
    };
    if found("qemu-system-arm") {
        return Ok("qemu-system-arm".into());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if is_root && found("apt-get") {
        println!("qemu-system-arm not found: installing it with apt-get (Debian package qemu-system-arm)");
        let ok = Command::new("apt-get")
            .arg("update")
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "--no-install-recommends",
                    "qemu-system-arm",
                ])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success());
        if ok && found("qemu-system-arm") {
            return Ok("qemu-system-arm".into());
        }
        return Err("installing qemu-system-arm with apt-get failed".into());
    }
    Err("qemu-system-arm not found. Install it with:\n    \
         sudo apt-get install -y --no-install-recommends qemu-system-arm\n\
         (or set QEMU_SYSTEM_ARM to the binary)"
        .into())
}

fn release_dir() -> PathBuf {
    let target_dir = env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"));
    target_dir.join(TARGET).join("release")
}

/// The kernel ELF of `bin` for `machine`: a copy taken right after its build (cargo puts
/// every feature set's binary at the same path, so the next board's build overwrites it).
fn elf_path(bin: &str, machine: &str) -> PathBuf {
    release_dir().join("boards").join(machine).join(bin)
}

/// Builds `bins` for `machine` (its `board-*` feature) and copies them to [`elf_path`].
fn build_kernels_for(machine: &str, bins: &[String]) -> bool {
    let Some(board) = self::machine(machine) else {
        println!("unknown machine {machine}");
        return false;
    };
    let mut c = cargo();
    c.args([
        "build",
        "--release",
        "--target",
        TARGET,
        "-p",
        TESTS_PACKAGE,
    ]);
    if let Some(f) = board.feature {
        c.args(["--features", f]);
    }
    for b in bins {
        c.args(["--bin", b]);
    }
    if !step(&format!("build test kernels ({machine})"), c) {
        return false;
    }
    for b in bins {
        let to = elf_path(b, machine);
        let copied = fs::create_dir_all(to.parent().unwrap())
            .and_then(|_| fs::copy(release_dir().join(b), &to));
        if let Err(e) = copied {
            println!("copy {b} for {machine} ... FAILED: {e}");
            return false;
        }
    }
    true
}

fn build_kernels(bins: &[String]) -> bool {
    build_kernels_for("virt", bins)
}

fn qemu_command(qemu: &str, b: &Boot) -> Command {
    let mut semi = String::from("enable=on,target=native");
    for a in [format!("mem={}", b.mem), format!("smp={}", b.smp)]
        .into_iter()
        .chain(b.args.iter().cloned())
    {
        semi += &format!(",arg={}", a.replace(',', ",,"));
    }
    let ram = machine(&b.machine).and_then(|m| m.ram_mib).unwrap_or(b.mem);
    let mut c = Command::new(qemu);
    c.args(["-M", &b.machine, "-cpu", &b.cpu, "-smp", &b.smp.to_string()])
        .args(["-m", &format!("{ram}M"), "-nographic", "-nic", "none"])
        .args(["-semihosting-config", &semi])
        .arg("-kernel")
        .arg(elf_path(&b.bin, &b.machine))
        // vexpress has a sound chip; QEMU's default audio backends only print noise here.
        .env("QEMU_AUDIO_DRV", "none");
    c
}

struct Outcome {
    status: Option<ExitStatus>,
    console: String,
    elapsed: Duration,
}

/// Boots one configuration with its output captured; kills QEMU at the timeout.
fn boot(qemu: &str, b: &Boot) -> Outcome {
    boot_with(qemu, b, &[])
}

/// [`boot`] with extra QEMU arguments.
fn boot_with(qemu: &str, b: &Boot, extra: &[&str]) -> Outcome {
    let start = Instant::now();
    let mut cmd = qemu_command(qemu, b);
    cmd.args(extra)
        .args(["-monitor", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child: Child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                status: None,
                console: format!("could not start {qemu}: {e}"),
                elapsed: start.elapsed(),
            }
        }
    };
    let console = Arc::new(Mutex::new(Vec::<u8>::new()));
    let mut readers = Vec::new();
    for mut pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let sink = Arc::clone(&console);
        readers.push(thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        }));
    }
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() >= b.timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    for r in readers {
        let _ = r.join();
    }
    let console = String::from_utf8_lossy(&console.lock().unwrap()).replace('\r', "");
    Outcome {
        status,
        console,
        elapsed: start.elapsed(),
    }
}

/// Judges an outcome against the expectation: `Ok(note)` or `Err(reason)`.
fn judge(b: &Boot, o: &Outcome) -> Result<String, String> {
    let secs = o.elapsed.as_secs_f32();
    match (&b.expect, o.status) {
        (Expect::Pass, Some(s)) if s.success() => Ok(format!("{secs:.1}s")),
        (Expect::Pass, Some(s)) => Err(format!("kernel exited with {s}")),
        (Expect::Pass, None) => Err(format!("timed out after {}s", b.timeout.as_secs())),
        (Expect::Timeout, None) => Ok(format!("timed out as expected after {secs:.1}s")),
        (Expect::Timeout, Some(s)) => Err(format!("expected a timeout, but it exited with {s}")),
        (Expect::Fail(_), None) => Err(format!(
            "expected a failing exit, but it timed out after {}s",
            b.timeout.as_secs()
        )),
        (Expect::Fail(_), Some(s)) if s.success() => {
            Err("expected a failure, but the kernel exited 0".into())
        }
        (Expect::Fail(Some(text)), Some(_)) if !o.console.contains(text.as_str()) => Err(format!(
            "failed, but the console does not show the expected \"{text}\""
        )),
        (Expect::Fail(_), Some(s)) => Ok(format!("failed as expected ({s})")),
    }
}

fn cmd_test(args: &[String]) -> i32 {
    let mut filter: Option<String> = None;
    let mut jobs = thread::available_parallelism().map_or(1, |n| n.get());
    let mut skip_host = false;
    let mut long = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--filter" => filter = it.next().cloned(),
            "--jobs" => jobs = it.next().and_then(|j| j.parse().ok()).unwrap_or(1).max(1),
            "--skip-host" => skip_host = true,
            "--long" => long = true,
            _ => {
                eprintln!("unknown argument {a}");
                return 2;
            }
        }
    }
    let (mut passed, mut failed) = (0u32, 0u32);
    let finish = |p: u32, f: u32| {
        println!("{p} passed, {f} failed");
        i32::from(f > 0 || p == 0)
    };

    if !skip_host {
        let mut fmt = cargo();
        fmt.args(["fmt", "--all", "--", "--check"]);
        let mut clippy = cargo();
        clippy.args([
            "clippy",
            "--workspace",
            "--exclude",
            TESTS_PACKAGE,
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]);
        let mut clippy_arm = cargo();
        clippy_arm.args([
            "clippy",
            "--target",
            TARGET,
            "-p",
            "armv7-mm",
            "-p",
            TESTS_PACKAGE,
            "--",
            "-D",
            "warnings",
        ]);
        // Docs for both targets, warnings denied: the host build with every feature (the
        // host models), and the ARM build as docs.rs makes it (the CP15 layer; `tlb-model`
        // needs `std`, which the ARM target does not have).
        let mut doc = cargo();
        doc.args(["doc", "--no-deps", "-p", "armv7-mm", "--all-features"])
            .env("RUSTDOCFLAGS", "-D warnings");
        let mut doc_arm = cargo();
        doc_arm
            .args(["doc", "--no-deps", "-p", "armv7-mm", "--target", TARGET])
            .env("RUSTDOCFLAGS", "-D warnings");
        // Ready to publish: the package builds from what it ships, and its `rust-version`
        // is the toolchain the repository pins (the MSRV this suite verifies).
        let mut publish = cargo();
        publish.args(["publish", "--dry-run", "-p", "armv7-mm", "--allow-dirty"]);
        let mut host = cargo();
        host.args([
            "test",
            "--workspace",
            "--exclude",
            TESTS_PACKAGE,
            "--all-features",
        ]);
        match check_rust_version() {
            Ok(v) => {
                println!("rust-version {v} = the pinned toolchain ... ok");
                passed += 1;
            }
            Err(e) => {
                println!("rust-version ... FAILED: {e}");
                return finish(passed, failed + 1);
            }
        }
        match check_readme_sketch() {
            Ok(()) => {
                println!("README sketch = tests/readme.rs ... ok");
                passed += 1;
            }
            Err(e) => {
                println!("README sketch ... FAILED: {e}");
                return finish(passed, failed + 1);
            }
        }
        match layers::check(&root()) {
            Ok(summary) => {
                println!("layers: {summary} ... ok");
                passed += 1;
            }
            Err(breaches) => {
                for b in &breaches {
                    println!("  {b}");
                }
                println!(
                    "layers ... FAILED ({} breaches; `cargo xtask layers` shows the graph)",
                    breaches.len()
                );
                failed += 1;
            }
        }
        let mut steps = vec![
            ("cargo fmt --check".to_string(), fmt),
            ("cargo clippy (host)".to_string(), clippy),
            ("cargo clippy (armv7a-none-eabi)".to_string(), clippy_arm),
        ];
        // The boards' runtime code is compiled only with their features (one at a time).
        for m in MACHINES.iter().filter(|m| m.feature.is_some()) {
            let mut c = cargo();
            c.args(["clippy", "--target", TARGET, "-p", TESTS_PACKAGE]);
            c.args(["--features", m.feature.unwrap(), "--", "-D", "warnings"]);
            steps.push((format!("cargo clippy (armv7a-none-eabi, {})", m.name), c));
        }
        steps.push(("cargo doc (host)".to_string(), doc));
        steps.push(("cargo doc (armv7a-none-eabi)".to_string(), doc_arm));
        steps.push(("cargo publish --dry-run".to_string(), publish));
        steps.push(("host tests".to_string(), host));
        steps.push((
            "hostile-input harness".to_string(),
            mutants::hostile_command(long),
        ));
        for (name, cmd) in steps {
            let name = name.as_str();
            if step(name, cmd) {
                println!("{name} ... ok");
                passed += 1;
            } else {
                failed += 1;
                return finish(passed, failed);
            }
        }
    }

    let boots = match discover() {
        Ok(b) => b,
        Err(e) => {
            println!("boot tests ... FAILED: {e}");
            return finish(passed, failed + 1);
        }
    };
    let boots: Vec<Boot> = boots
        .into_iter()
        .filter(|b| filter.as_ref().is_none_or(|f| b.name.contains(f.as_str())))
        .collect();
    if boots.is_empty() {
        println!("no boot test matched");
        return finish(passed, failed + 1);
    }
    let qemu = match qemu_binary() {
        Ok(q) => q,
        Err(e) => {
            println!("{e}");
            return finish(passed, failed + 1);
        }
    };
    for m in &MACHINES {
        let mut bins: Vec<String> = boots
            .iter()
            .filter(|b| b.machine == m.name)
            .map(|b| b.bin.clone())
            .collect();
        bins.sort();
        bins.dedup();
        if !bins.is_empty() && !build_kernels_for(m.name, &bins) {
            return finish(passed, failed + 1);
        }
    }

    println!(
        "==> boot tests ({} boots, {jobs} at a time, {qemu})",
        boots.len()
    );
    let queue = Arc::new(Mutex::new(
        boots.into_iter().enumerate().collect::<Vec<_>>(),
    ));
    let (tx, rx) = mpsc::channel::<(Boot, Outcome)>();
    let mut workers = Vec::new();
    for _ in 0..jobs {
        let (queue, tx, qemu) = (Arc::clone(&queue), tx.clone(), qemu.clone());
        workers.push(thread::spawn(move || loop {
            let next = {
                let mut q = queue.lock().unwrap();
                if q.is_empty() {
                    None
                } else {
                    Some(q.remove(0))
                }
            };
            let Some((_, b)) = next else { break };
            let o = boot(&qemu, &b);
            if tx.send((b, o)).is_err() {
                break;
            }
        }));
    }
    drop(tx);
    let mut failures: BTreeMap<String, String> = BTreeMap::new();
    for (b, o) in rx {
        match judge(&b, &o) {
            Ok(note) => {
                passed += 1;
                println!("{} ... ok ({note})", b.label());
            }
            Err(why) => {
                failed += 1;
                println!("{} ... FAILED: {why}", b.label());
                println!("---- console of {} ----", b.label());
                print!("{}", o.console);
                if !o.console.ends_with('\n') {
                    println!();
                }
                println!("---- end of console ----");
                failures.insert(b.label(), why);
            }
        }
        let _ = io::stdout().flush();
    }
    for w in workers {
        let _ = w.join();
    }
    if !failures.is_empty() {
        println!("failed boots:");
        for (l, why) in &failures {
            println!("    {l}: {why}");
        }
    }
    finish(passed, failed)
}

fn cmd_run(_args: &[String]) -> i32 {
    let qemu = match qemu_binary() {
        Ok(q) => q,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    if !build_kernels(&["demo".into()]) {
        return 1;
    }
    let b = Boot {
        name: "demo".into(),
        bin: "demo".into(),
        machine: "virt".into(),
        cpu: "cortex-a15".into(),
        smp: 1,
        mem: 128,
        args: vec![],
        expect: Expect::Pass,
        timeout: Duration::from_secs(DEFAULT_TIMEOUT_S),
    };
    let o = boot(&qemu, &b);
    print!("{}", o.console);
    match judge(&b, &o) {
        Ok(_) => 0,
        Err(why) => {
            eprintln!("demo failed: {why}");
            1
        }
    }
}

/// One result line of the benchmark kernel:
/// `bench <workload>: armv7-mm=<n> page_table_multiarch=<m> <unit>`.
#[derive(Debug, PartialEq)]
struct BenchLine {
    workload: String,
    ours: Option<u64>,
    peer: u64,
    unit: String,
}

fn parse_bench_line(line: &str) -> Option<BenchLine> {
    let rest = line.strip_prefix("bench ")?;
    let (workload, rest) = rest.split_once(": ")?;
    let mut words = rest.split_whitespace();
    let ours = words.next()?.strip_prefix("armv7-mm=")?;
    let peer = words.next()?.strip_prefix("page_table_multiarch=")?;
    let unit = words.next()?;
    if words.next().is_some() {
        return None;
    }
    Some(BenchLine {
        workload: workload.to_string(),
        ours: if ours == "n/a" {
            None
        } else {
            Some(ours.parse().ok()?)
        },
        peer: peer.parse().ok()?,
        unit: unit.to_string(),
    })
}

/// The Markdown table of BENCHMARKS.md for the result lines.
fn bench_table(lines: &[BenchLine]) -> String {
    let mut t = String::from(
        "| workload | unit | armv7-mm | page_table_multiarch | armv7-mm / peer |\n\
         | --- | --- | ---: | ---: | ---: |\n",
    );
    for l in lines {
        let (ours, ratio) = match l.ours {
            Some(n) if l.peer > 0 => (n.to_string(), format!("{:.3}", n as f64 / l.peer as f64)),
            Some(n) => (n.to_string(), "-".to_string()),
            None => ("n/a".to_string(), "-".to_string()),
        };
        t += &format!(
            "| {} | {} | {} | {} | {} |\n",
            l.workload, l.unit, ours, l.peer, ratio
        );
    }
    t
}

/// `Ok` if every run printed the same lines as the first; otherwise what differs.
fn runs_identical(runs: &[Vec<String>]) -> Result<(), String> {
    let first = &runs[0];
    for (i, other) in runs.iter().enumerate().skip(1) {
        if other != first {
            let mut diff = format!("bench: run {} differs from run 1:\n", i + 1);
            for (a, b) in first.iter().zip(other) {
                if a != b {
                    diff += &format!("    run 1: {a}\n    run {}: {b}\n", i + 1);
                }
            }
            if first.len() != other.len() {
                diff += &format!("    {} lines against {}\n", first.len(), other.len());
            }
            return Err(diff);
        }
    }
    Ok(())
}

/// The benchmark kernel and the QEMU configuration it is measured in.
fn bench_boot() -> Boot {
    Boot {
        name: "bench".into(),
        bin: "bench".into(),
        machine: "virt".into(),
        cpu: "cortex-a15".into(),
        smp: 1,
        mem: 1024,
        args: vec![],
        expect: Expect::Pass,
        timeout: Duration::from_secs(600),
    }
}

/// QEMU arguments of a measured run: one virtual-clock nanosecond per instruction, so the
/// guest's cycle counter counts instructions, deterministically.
const BENCH_QEMU_ARGS: [&str; 2] = ["-icount", "shift=0"];

fn cmd_bench(args: &[String]) -> i32 {
    let mut runs = 2usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => runs = it.next().and_then(|v| v.parse().ok()).unwrap_or(2).max(2),
            _ => {
                eprintln!("unknown argument {a}");
                return 2;
            }
        }
    }
    let qemu = match qemu_binary() {
        Ok(q) => q,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let b = bench_boot();
    if !build_kernels(std::slice::from_ref(&b.bin)) {
        return 1;
    }
    let mut results: Vec<Vec<String>> = Vec::new();
    for run in 1..=runs {
        println!(
            "==> bench run {run}/{runs}: {} {}",
            b.label(),
            BENCH_QEMU_ARGS.join(" ")
        );
        let _ = io::stdout().flush();
        let o = boot_with(&qemu, &b, &BENCH_QEMU_ARGS);
        let lines: Vec<String> = o
            .console
            .lines()
            .filter(|l| l.starts_with("bench ") || l.starts_with("info "))
            .map(str::to_string)
            .collect();
        let complete = lines.iter().any(|l| l == "bench done");
        if let Err(why) = judge(&b, &o).and_then(|_| {
            complete
                .then_some(())
                .ok_or_else(|| "no 'bench done' line".to_string())
        }) {
            println!("bench run {run} FAILED: {why}");
            println!("---- console ----\n{}---- end of console ----", o.console);
            return 1;
        }
        results.push(lines);
    }
    if let Err(diff) = runs_identical(&results) {
        print!("{diff}");
        return 1;
    }
    let first = &results[0];
    for l in first {
        println!("{l}");
    }
    let parsed: Vec<BenchLine> = first.iter().filter_map(|l| parse_bench_line(l)).collect();
    let expected = first
        .iter()
        .filter(|l| l.starts_with("bench ") && l.as_str() != "bench done")
        .count();
    if parsed.len() != expected || parsed.is_empty() {
        println!(
            "bench: {} result lines do not parse",
            expected - parsed.len()
        );
        return 1;
    }
    println!("bench: all {runs} runs printed identical counts\n");
    print!("{}", bench_table(&parsed));
    0
}

fn cmd_qemu(args: &[String]) -> i32 {
    let Some(test) = args.first() else {
        eprintln!(
            "usage: cargo xtask qemu <test> [--machine M] [--cpu C] [--smp N] [--mem MiB] [--arg A]... [--gdb]"
        );
        return 2;
    };
    // Defaults: the test's own first declared configuration (CPU, CPUs, memory), so a
    // kernel that needs e.g. 4 CPUs or 5 GiB boots as it does under `cargo xtask test`.
    let declared = parse_test(&root().join("tests").join(format!("{test}.rs")))
        .ok()
        .flatten()
        .and_then(|boots| boots.into_iter().next());
    let mut b = Boot {
        name: test.clone(),
        bin: test.clone(),
        machine: declared
            .as_ref()
            .map_or("virt".into(), |d| d.machine.clone()),
        cpu: declared
            .as_ref()
            .map_or("cortex-a15".into(), |d| d.cpu.clone()),
        smp: declared.as_ref().map_or(1, |d| d.smp),
        mem: declared.as_ref().map_or(128, |d| d.mem),
        args: vec![],
        expect: Expect::Pass,
        timeout: Duration::MAX,
    };
    let mut gdb = false;
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--machine" => {
                b.machine = it.next().cloned().unwrap_or(b.machine);
                if let Some(c) = machine(&b.machine).and_then(|m| m.cpu) {
                    b.cpu = c.into();
                }
                if let Some(n) = machine(&b.machine).and_then(|m| m.smp) {
                    b.smp = n;
                }
            }
            "--cpu" => b.cpu = it.next().cloned().unwrap_or(b.cpu),
            "--smp" => b.smp = it.next().and_then(|v| v.parse().ok()).unwrap_or(1),
            "--mem" => b.mem = it.next().and_then(|v| v.parse().ok()).unwrap_or(128),
            "--arg" => b.args.extend(it.next().cloned()),
            "--gdb" => gdb = true,
            _ => {
                eprintln!("unknown argument {a}");
                return 2;
            }
        }
    }
    let qemu = match qemu_binary() {
        Ok(q) => q,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    if !build_kernels_for(&b.machine, std::slice::from_ref(test)) {
        return 1;
    }
    let mut c = qemu_command(&qemu, &b);
    if gdb {
        println!(
            "QEMU waits for gdb: gdb-multiarch {} -ex 'target remote :1234'",
            elf_path(test, &b.machine).display()
        );
        c.args(["-s", "-S"]);
    }
    println!("(Ctrl-A x quits QEMU)");
    match c.status() {
        Ok(s) => s.code().unwrap_or(1),
        Err(e) => {
            eprintln!("could not start {qemu}: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn boots_of(header: &str) -> Vec<Boot> {
        // Tests run in parallel: one directory per call, the file always named `t.rs`.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = env::temp_dir().join(format!("xtask-test-{}-{n}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.rs");
        fs::write(&path, format!("{header}\n#![no_std]\n")).unwrap();
        let boots = parse_test(&path).unwrap().unwrap_or_default();
        fs::remove_dir_all(&dir).unwrap();
        boots
    }

    fn outcome(code: Option<i32>, console: &str) -> Outcome {
        Outcome {
            status: code.map(|c| ExitStatus::from_raw(c << 8)),
            console: console.into(),
            elapsed: Duration::from_millis(5),
        }
    }

    #[test]
    fn readme_sketch_is_the_readme_kernel() {
        let read = |p: &str| fs::read_to_string(root().join(p)).unwrap();
        let (readme, kernel) = (read("README.md"), read("tests/readme.rs"));
        assert_eq!(readme_sketch_matches(&readme, &kernel), Ok(()));
        // Teeth: a call changed in the README only, a line dropped, a region missing.
        let drifted = readme.replacen("user.unmap(HEAP", "user.unmap(RAM", 1);
        assert_ne!(drifted, readme);
        let e = readme_sketch_matches(&drifted, &kernel).unwrap_err();
        assert!(e.contains("README:     user.unmap(RAM"), "{e}");
        let shorter = readme.replacen("    gather.finish();\n", "", 1);
        assert!(readme_sketch_matches(&shorter, &kernel).is_err());
        let unmarked = kernel.replace("// README-BEGIN", "");
        assert!(readme_sketch_matches(&readme, &unmarked).is_err());
        // Indentation of a whole side does not matter.
        let indented: String = kernel.lines().map(|l| format!("    {l}\n")).collect();
        assert_eq!(readme_sketch_matches(&readme, &indented), Ok(()));
    }

    #[test]
    fn rust_version_must_be_the_pinned_toolchain() {
        let pin = "[toolchain]\nchannel = \"1.95.0\"\n";
        let meta = |v: &str| {
            format!(
                "{{\"packages\":[{{\"name\":\"armv7-mm-tests\",\"version\":\"0.0.0\",\
                 \"dependencies\":[{{\"name\":\"armv7-mm\",\"req\":\"*\"}}],\
                 \"rust_version\":null}},{{\"name\":\"armv7-mm\",\"version\":\"0.1.0\",\
                 \"rust_version\":{v}}}]}}"
            )
        };
        assert_eq!(
            rust_version_matches(&meta("\"1.95\""), pin),
            Ok("1.95".to_string())
        );
        assert!(rust_version_matches(&meta("\"1.80\""), pin).is_err());
        assert!(rust_version_matches(&meta("null"), pin).is_err());
        assert!(rust_version_matches(&meta("\"1.95\""), "[toolchain]\n").is_err());
    }

    #[test]
    fn header_gives_cross_product_and_variants() {
        let boots = boots_of(
            "//! qemu: cpu=cortex-a15,cortex-a7 smp=1,4 mem=256\n\
             //! timeout: 7\n\
             //! variant: noflush arg=skip-flush arg=x=1 expect=fail \"stale\"",
        );
        assert_eq!(boots.len(), 8);
        assert_eq!(boots[0].label(), "t [cortex-a15, smp 1, 256 MiB]");
        assert!(boots.iter().all(|b| b.timeout == Duration::from_secs(7)));
        let v: Vec<_> = boots.iter().filter(|b| b.name == "t:noflush").collect();
        assert_eq!(v.len(), 4);
        assert_eq!(v[0].args, vec!["skip-flush".to_string(), "x=1".to_string()]);
        assert_eq!(v[0].expect, Expect::Fail(Some("stale".into())));
        assert!(boots_of("//! just docs").is_empty());
    }

    #[test]
    fn machine_axis_fixes_board_cpus_and_restricts_variants() {
        let boots = boots_of(
            "//! qemu: machine=virt,vexpress-a9,raspi2b cpu=cortex-a15,cortex-a7 smp=1 mem=64\n\
             //! variant: a9only machine=vexpress-a9 arg=x expect=fail \"y\"",
        );
        let labels: Vec<String> = boots.iter().map(Boot::label).collect();
        assert_eq!(
            labels,
            [
                "t [cortex-a15, smp 1, 64 MiB]",
                "t [cortex-a7, smp 1, 64 MiB]",
                "t [vexpress-a9, cortex-a9, smp 1, 64 MiB]",
                "t [raspi2b, cortex-a7, smp 4, 64 MiB]",
                "t:a9only [vexpress-a9, cortex-a9, smp 1, 64 MiB]",
            ]
        );
        let raspi = &boots[3];
        let args: Vec<String> = qemu_command("q", raspi)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let after = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();
        assert_eq!(after("-M"), "raspi2b");
        assert_eq!(after("-m"), "1024M", "raspi2b always has 1 GiB");
        assert!(after("-semihosting-config").contains("arg=mem=64"));
        assert!(after("-kernel").ends_with("boards/raspi2b/t"));
        let dir = env::temp_dir().join(format!("xtask-machine-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("t.rs");
        fs::write(
            &bad,
            "//! qemu: machine=virt\n//! variant: v machine=raspi2b arg=x\n",
        )
        .unwrap();
        assert!(
            parse_test(&bad).is_err(),
            "a variant's machine must be the test's"
        );
        fs::write(&bad, "//! qemu: machine=pc\n").unwrap();
        assert!(parse_test(&bad).is_err(), "unknown machine");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn judge_never_passes_a_bad_boot() {
        let pass = &boots_of("//! qemu: cpu=cortex-a15")[0];
        assert!(judge(pass, &outcome(Some(0), "")).is_ok());
        assert!(judge(pass, &outcome(Some(1), "")).is_err());
        assert!(
            judge(pass, &outcome(None, "")).is_err(),
            "a timeout must fail"
        );

        let fail = &boots_of("//! qemu: cpu=cortex-a15\n//! expect: fail \"boom\"")[0];
        assert!(judge(fail, &outcome(Some(1), "..boom..")).is_ok());
        assert!(
            judge(fail, &outcome(Some(1), "other")).is_err(),
            "wrong reason"
        );
        assert!(judge(fail, &outcome(Some(0), "boom")).is_err(), "exit 0");
        assert!(judge(fail, &outcome(None, "boom")).is_err(), "timeout");

        let hang = &boots_of("//! qemu: cpu=cortex-a15\n//! expect: timeout")[0];
        assert!(judge(hang, &outcome(None, "")).is_ok());
        assert!(judge(hang, &outcome(Some(0), "")).is_err());
    }

    #[test]
    fn bench_lines_parse_and_the_kernel_is_no_boot_test() {
        let l = parse_bench_line(
            "bench teardown-256MiB: armv7-mm=12 page_table_multiarch=153 insns/page",
        )
        .expect("parses");
        assert_eq!(l.workload, "teardown-256MiB");
        assert_eq!(
            (l.ours, l.peer, l.unit.as_str()),
            (Some(12), 153, "insns/page")
        );
        let na = parse_bench_line("bench x: armv7-mm=n/a page_table_multiarch=1 bytes").unwrap();
        assert_eq!(na.ours, None);
        assert!(parse_bench_line("bench x: armv7-mm=1 page_table_multiarch=z bytes").is_none());
        assert!(parse_bench_line("bench done").is_none());
        assert!(bench_table(&[l]).contains("| teardown-256MiB | insns/page | 12 | 153 | 0.078 |"));
        let boots = discover().expect("tests/ parses");
        assert!(
            boots.iter().all(|b| b.bin != "bench"),
            "bench must not be a boot test"
        );

        let run = |n: &str| {
            vec![
                "bench a: armv7-mm=1 page_table_multiarch=2 bytes".to_string(),
                n.to_string(),
            ]
        };
        assert!(runs_identical(&[run("x"), run("x"), run("x")]).is_ok());
        let diff = runs_identical(&[run("x"), run("x"), run("y")]).unwrap_err();
        assert!(diff.contains("run 3: y"), "{diff}");
        assert!(
            runs_identical(&[run("x"), vec![]]).is_err(),
            "a short run differs"
        );
    }

    #[test]
    fn every_test_file_is_discovered_with_a_bin() {
        let boots = discover().expect("tests/ parses");
        assert!(boots.iter().any(|b| b.name == "boot"));
        assert!(boots
            .iter()
            .any(|b| b.name == "selfcheck_hang" && b.expect == Expect::Timeout));
    }
}
