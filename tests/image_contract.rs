//! The container images' contracts with the rest of the repository, read from the Dockerfile
//! (hadolint judges the file itself: tests/dockerfile_lint.rs): the toolchain's and Debian's
//! base images, a numeric non-root user, EXPOSE on GREGOR_RELAY_HTTP_ADDR's default port, the
//! binaries the final stages copy are what their builders install, the runtime stage installs
//! every package the binaries' shared libraries come from, the HEALTHCHECK (verbatim) fails
//! while nothing listens and passes against a live relay, and `.dockerignore` keeps every file
//! the build reads (matched by docker-py's own `.dockerignore` matcher).
//!
//! Needs the services of `./scripts/services up`, the workspace binaries (`cargo build
//! --workspace --bins`; `./scripts/test` does both) and Debian's python3-docker (installed with
//! docker-compose by `./scripts/services up`).

use std::collections::BTreeSet;
use std::io::{ErrorKind, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use gregor_integration_tests::relay_env;
use gregor_testkit::dockerfile::{Dockerfile, argv};
use gregor_testkit::process::{self, Proc};
use gregor_testkit::repo::{read, root};
use gregor_testkit::{ConfigTable, TestDb, as_pairs, free_port, kafka_bootstrap, wait_until};

/// The argument of the last `keyword` that applies to `stage` (its own or its base's).
fn setting(dockerfile: &Dockerfile, stage: &str, keyword: &str) -> anyhow::Result<String> {
    dockerfile
        .effective(stage, keyword)?
        .map(|i| i.args.clone())
        .ok_or_else(|| anyhow::anyhow!("stage {stage} has no {keyword}"))
}

fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':')?.1.parse().ok()
}

#[test]
fn the_images_use_the_toolchain_and_one_debian_release() -> anyhow::Result<()> {
    let dockerfile = Dockerfile::load()?;
    let toolchain = read("rust-toolchain.toml")?;
    let channel = toolchain
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel = "))
        .expect("rust-toolchain.toml has a channel")
        .trim_matches('"');
    let minor: Vec<&str> = channel.split('.').take(2).collect();
    assert_eq!(
        dockerfile.stage("builder")?.from,
        format!("rust:{}-slim-bookworm", minor.join("."))
    );
    assert_eq!(dockerfile.stage("runtime")?.from, "debian:bookworm-slim");
    assert_eq!(
        dockerfile.stage_names().last(),
        Some(&"relay"),
        "the default target (the last stage) is the relay image"
    );
    assert_eq!(dockerfile.stage("relay")?.from, "runtime");
    assert_eq!(dockerfile.stage("examples")?.from, "runtime");
    Ok(())
}

#[test]
fn the_images_run_as_the_numeric_non_root_user_the_runtime_stage_creates() -> anyhow::Result<()> {
    let dockerfile = Dockerfile::load()?;
    let created = dockerfile
        .chain("runtime")?
        .iter()
        .find_map(|i| {
            let words: Vec<&str> = i.args.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "useradd")?;
            let flag = |name: &str| {
                words[at..]
                    .windows(2)
                    .find(|w| w[0] == name)
                    .map(|w| w[1].to_owned())
            };
            Some((flag("--uid")?, flag("--gid")?))
        })
        .expect("the runtime stage creates its user with useradd --uid --gid");
    for stage in ["relay", "examples"] {
        let user = setting(&dockerfile, stage, "USER")?;
        let (uid, gid) = user.split_once(':').unwrap_or((&user, &user));
        let uid: u32 = uid
            .parse()
            .unwrap_or_else(|_| panic!("{stage}: USER {user} is not numeric (runAsNonRoot)"));
        assert_ne!(uid, 0, "{stage} runs as root");
        assert_eq!(
            (uid.to_string(), gid.to_owned()),
            created,
            "{stage}: USER is not the user useradd creates"
        );
    }
    Ok(())
}

#[test]
fn entrypoints_and_ports_match_the_binaries_and_readme() -> anyhow::Result<()> {
    let dockerfile = Dockerfile::load()?;
    let readme = ConfigTable::load()?;
    assert_eq!(
        argv(&setting(&dockerfile, "relay", "ENTRYPOINT")?),
        ["gregor-relay"]
    );
    let default_addr = readme
        .default_of("GREGOR_RELAY_HTTP_ADDR")
        .expect("README documents GREGOR_RELAY_HTTP_ADDR");
    let expose = setting(&dockerfile, "relay", "EXPOSE")?;
    assert_eq!(
        expose.parse::<u16>().ok(),
        port_of(default_addr),
        "EXPOSE {expose} is not the port of GREGOR_RELAY_HTTP_ADDR's default {default_addr}"
    );
    // The examples image: compose picks the program with `command`.
    assert!(dockerfile.effective("examples", "ENTRYPOINT")?.is_none());
    assert_eq!(
        argv(&setting(&dockerfile, "examples", "CMD")?),
        ["shipping-service"]
    );
    Ok(())
}

#[test]
fn final_stages_copy_what_their_builders_install() -> anyhow::Result<()> {
    let dockerfile = Dockerfile::load()?;
    for stage in ["relay", "examples"] {
        let copies: Vec<String> = dockerfile
            .stage(stage)?
            .instructions
            .iter()
            .filter(|i| i.keyword == "COPY")
            .map(|i| i.args.clone())
            .collect();
        assert!(!copies.is_empty(), "{stage} copies no binaries");
        for copy in copies {
            let words: Vec<&str> = copy.split_whitespace().collect();
            let from = words
                .iter()
                .find_map(|w| w.strip_prefix("--from="))
                .unwrap_or_else(|| panic!("{stage}: COPY {copy} is not from a builder stage"));
            // `install -t /out …/release/<name>` lines of the builder and its base stages.
            let installed: BTreeSet<String> = dockerfile
                .chain(from)?
                .iter()
                .filter(|i| i.keyword == "RUN" && i.args.contains("-t /out"))
                .flat_map(|i| i.args.split_whitespace())
                .filter_map(|w| w.trim_matches('"').rsplit_once("/release/"))
                .map(|(_, name)| format!("/out/{name}"))
                .collect();
            let sources = &words[1..words.len() - 1];
            for source in sources.iter().filter(|w| !w.starts_with("--")) {
                assert!(
                    installed.contains(*source),
                    "{stage}: COPY --from={from} {source}, which {from} does not install ({installed:?})"
                );
                // … and it is a binary of this workspace.
                let name = source.trim_start_matches("/out/");
                process::binary(name)?;
            }
        }
    }
    Ok(())
}

/// Debian packages of debian:bookworm-slim the binaries may link against: the C library,
/// libgcc and zlib (dependencies of its Essential packages) and libstdc++ (apt's).
const BASE_IMAGE_LIBRARIES: &[&str] = &["libc6", "libgcc-s1", "zlib1g", "libstdc++6"];

/// The Debian packages owning the shared libraries `binary` loads.
fn library_packages(binary: &Path) -> anyhow::Result<BTreeSet<String>> {
    let out = Command::new("ldd").arg(binary).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "ldd {}: {text}", binary.display());
    assert!(!text.contains("not found"), "unresolved libraries:\n{text}");
    let mut packages = BTreeSet::new();
    for lib in text
        .lines()
        .filter_map(|l| l.split_once("=> ")?.1.split_whitespace().next())
    {
        let canonical = std::fs::canonicalize(lib)?;
        // Bookworm's merged /usr: dpkg knows some libraries by their /lib path.
        let candidates = [
            lib.to_owned(),
            canonical.to_string_lossy().into_owned(),
            canonical
                .to_string_lossy()
                .replacen("/usr/lib/", "/lib/", 1),
        ];
        let owner = candidates.iter().find_map(|p| {
            let out = Command::new("dpkg-query").arg("-S").arg(p).output().ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            out.status
                .success()
                .then(|| text.split(':').next().unwrap_or("").trim().to_owned())
        });
        packages.insert(owner.unwrap_or_else(|| panic!("no Debian package owns {lib}")));
    }
    Ok(packages)
}

#[test]
fn the_runtime_stage_installs_the_libraries_the_binaries_load() -> anyhow::Result<()> {
    let dockerfile = Dockerfile::load()?;
    let installed: BTreeSet<String> = dockerfile
        .chain("runtime")?
        .iter()
        .filter(|i| i.keyword == "RUN")
        .flat_map(|i| i.args.split("&&"))
        .filter_map(|cmd| cmd.trim().strip_prefix("apt-get install"))
        .flat_map(str::split_whitespace)
        .filter(|w| !w.starts_with('-'))
        .map(str::to_owned)
        .collect();
    assert!(installed.contains("libssl3"), "{installed:?}");
    for name in ["gregor-relay", "gregor"] {
        for package in library_packages(&process::binary(name)?)? {
            assert!(
                BASE_IMAGE_LIBRARIES.contains(&package.as_str()) || installed.contains(&package),
                "{name} loads a library of {package}, which neither debian:bookworm-slim nor the runtime stage ({installed:?}) provides"
            );
        }
    }
    Ok(())
}

/// The HEALTHCHECK's command, verbatim, with `GREGOR_RELAY_HTTP_ADDR=addr`, under its timeout.
fn health_check(dockerfile: &Dockerfile, addr: &str) -> anyhow::Result<bool> {
    let healthcheck = setting(dockerfile, "relay", "HEALTHCHECK")?;
    let (options, command) = healthcheck
        .split_once("CMD ")
        .ok_or_else(|| anyhow::anyhow!("HEALTHCHECK without CMD"))?;
    let timeout = options
        .split_whitespace()
        .find_map(|o| o.strip_prefix("--timeout="))
        .ok_or_else(|| anyhow::anyhow!("HEALTHCHECK without --timeout"))?;
    let status = Command::new("timeout")
        .arg(timeout)
        .args(argv(command.trim()))
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("GREGOR_RELAY_HTTP_ADDR", addr)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    Ok(status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_check_follows_a_live_relay() -> anyhow::Result<()> {
    let dockerfile = Dockerfile::load()?;
    let readme = ConfigTable::load()?;
    assert!(
        setting(&dockerfile, "relay", "HEALTHCHECK")?.contains("GREGOR_RELAY_HTTP_ADDR")
            && readme.documents("GREGOR_RELAY_HTTP_ADDR")
    );
    let addr = format!("127.0.0.1:{}", free_port()?);
    assert!(
        !health_check(&dockerfile, &addr)?,
        "the health check passed with nothing listening on {addr}"
    );

    let db = TestDb::create("image_health").await?;
    let mut env = relay_env(&db.url, &kafka_bootstrap()?);
    env.retain(|(k, _)| k != "GREGOR_RELAY_HTTP_ADDR");
    env.push(("GREGOR_RELAY_HTTP_ADDR".into(), addr.clone()));
    let mut relay = Proc::spawn("gregor-relay", &as_pairs(&env))?;
    let healthy = wait_until(Duration::from_secs(60), "the HEALTHCHECK to pass", || {
        let ok = health_check(&dockerfile, &addr);
        async move { Ok(ok?.then_some(())) }
    })
    .await;
    if let Err(e) = healthy {
        panic!("{e}; relay log:\n{}", relay.log());
    }
    relay.signal("TERM")?;
    let status = relay.wait()?;
    assert!(
        status.success(),
        "the relay exited with {status} after SIGTERM"
    );
    assert!(
        !health_check(&dockerfile, &addr)?,
        "the health check passed after the relay stopped"
    );
    Ok(())
}

/// The paths of `paths` that `.dockerignore` `patterns` keep out of the build context, by
/// docker-py's PatternMatcher (Debian's python3-docker, Docker's rules in Python).
fn dockerignored(patterns: &str, paths: &BTreeSet<String>) -> anyhow::Result<BTreeSet<String>> {
    const SCRIPT: &str = "import sys\nfrom docker.utils.build import PatternMatcher\n\
        patterns = [l.strip() for l in open(sys.argv[1]) if l.strip() and not l.startswith('#')]\n\
        m = PatternMatcher(patterns)\n\
        for p in sys.stdin.read().split('\\n'):\n    if p and m.matches(p): print(p)\n";
    let dir = gregor_testkit::scratch_dir("gregor-dockerignore")?;
    let file = dir.join("dockerignore");
    std::fs::write(&file, patterns)?;
    let mut child = match Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .arg(&file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("/usr/bin/python3 is missing: run ./scripts/services up")
        }
        Err(e) => return Err(e.into()),
    };
    let list: Vec<&str> = paths.iter().map(String::as_str).collect();
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("python's stdin"))?
        .write_all(list.join("\n").as_bytes())?;
    let out = child.wait_with_output()?;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "docker-py's PatternMatcher failed (python3-docker comes with docker-compose: run \
         ./scripts/services up):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// Files the build reads: the workspace's manifests and the sources in cargo's dep-info of
/// the relay image's binaries (of the debug build `./scripts/test` makes: the same sources).
fn build_inputs() -> anyhow::Result<BTreeSet<String>> {
    let repo = root();
    let mut inputs: BTreeSet<String> = ["Cargo.toml", "Cargo.lock", "tests/Cargo.toml"]
        .map(str::to_owned)
        .into();
    for dir in ["crates", "examples"] {
        for entry in std::fs::read_dir(repo.join(dir))?.flatten() {
            if entry.path().join("Cargo.toml").is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                inputs.insert(format!("{dir}/{name}/Cargo.toml"));
            }
        }
    }
    for binary in ["gregor-relay", "gregor"] {
        let dep_info = process::binary(binary)?.with_extension("d");
        let text = std::fs::read_to_string(&dep_info)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", dep_info.display()))?;
        let deps = text.split_once(": ").map_or("", |(_, d)| d);
        for dep in deps.split_whitespace() {
            if let Ok(rel) = Path::new(dep).strip_prefix(&repo) {
                inputs.insert(rel.to_string_lossy().into_owned());
            }
        }
    }
    assert!(inputs.len() > 20, "too few build inputs found: {inputs:?}");
    Ok(inputs)
}

#[test]
fn dockerignore_keeps_every_build_input() -> anyhow::Result<()> {
    let inputs = build_inputs()?;
    let patterns = read(".dockerignore")?;
    let excluded = dockerignored(&patterns, &inputs)?;
    assert!(
        excluded.is_empty(),
        ".dockerignore excludes build inputs: {excluded:?}"
    );
    // The check is real: ignoring the SQL migrations would be caught.
    let excluded = dockerignored(&format!("{patterns}\n**/*.sql\n"), &inputs)?;
    assert!(
        excluded.contains("crates/gregor-outbox/migrations/0001_outbox.sql"),
        "{excluded:?}"
    );
    Ok(())
}
