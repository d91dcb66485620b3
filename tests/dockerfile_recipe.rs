//! The Dockerfile, built and run without Docker (the CI machine has none): its steps are
//! rendered into a plain shell script that runs here.
//!
//! * Builder stages run on this machine, copy-free: `COPY . <dir>` maps `<dir>` to the
//!   repository itself, so the cargo command lines run verbatim in the workspace (reusing its
//!   release build), with the Dockerfile's `CARGO_TARGET_DIR` mapped the same way.
//!   `apt-get install` installs only packages that are missing; the apt-list clean-up is skipped.
//! * Other paths of a stage live under a scratch "image root" (`<scratch>/<stage>/…`); `COPY
//!   --from` copies between those roots; `groupadd`/`useradd` create the image's user here when
//!   it is absent (and fail when it exists with another id).
//! * Anything else — an instruction or a command the renderer does not know, a shell pipeline,
//!   a `COPY --from` of a file the other stage does not produce — is refused, so what runs here
//!   is what the Dockerfile says.
//!
//! Then the image root is checked: the ENTRYPOINT resolves on the image's PATH, every shared
//! library the binaries load comes from the base image or the final stage's packages, the
//! binaries run as the image's user (`gregor-relay` with bad config exits 2 naming the
//! variable; `gregor --help` works), and the HEALTHCHECK command, verbatim, fails while nothing
//! listens and passes against a relay started as that user on a real database and broker. No
//! file the release build reads is excluded by `.dockerignore` (cargo's dep-info says which).
//!
//! What this cannot prove without Docker: that the base images' tags exist and carry what the
//! Debian packages say, and the `docker build` cache and layer mechanics (docs/adr/0008).
//!
//! The release build goes to the workspace's target directory (`<target>/release`), or to
//! `GREGOR_RECIPE_TARGET_DIR` when set (to keep a running benchmark's binaries untouched).
//! Needs the services of `./scripts/services up` and root (apt-get, useradd), as CI has.

use gregor_integration_tests::repo::{self, read, root};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use gregor_testkit::{TestDb, kafka_bootstrap, wait_until};

fn scratch(tag: &str) -> PathBuf {
    repo::scratch("recipe", tag)
}

// ---- Dockerfile parsing ----------------------------------------------------------------------

/// One instruction, continuation lines joined.
#[derive(Debug, Clone)]
struct Instruction {
    line: usize,
    keyword: String,
    args: String,
}

const SUPPORTED: &[&str] = &[
    "FROM",
    "ARG",
    "ENV",
    "WORKDIR",
    "COPY",
    "RUN",
    "USER",
    "EXPOSE",
    "HEALTHCHECK",
    "ENTRYPOINT",
    "CMD",
    "LABEL",
];

fn parse(text: &str) -> Result<Vec<Instruction>, String> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        // Comment lines, also between continuation lines (as Docker drops them).
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_none()) {
            continue;
        }
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                acc.push_str(part.trim());
                acc.push(' ');
                pending = Some((start, acc));
            }
            None => {
                acc.push_str(trimmed);
                let (keyword, args) = acc.split_once(char::is_whitespace).unwrap_or((&acc, ""));
                let keyword = keyword.to_ascii_uppercase();
                if !SUPPORTED.contains(&keyword.as_str()) {
                    return Err(format!(
                        "Dockerfile line {start}: unsupported instruction {keyword} (the recipe renderer knows {SUPPORTED:?})"
                    ));
                }
                out.push(Instruction {
                    line: start,
                    keyword,
                    args: args.trim().to_owned(),
                });
            }
        }
    }
    if let Some((line, _)) = pending {
        return Err(format!(
            "Dockerfile line {line}: continuation at the end of the file"
        ));
    }
    Ok(out)
}

/// JSON exec form (`["a", "b"]`) or shell form (`/bin/sh -c "…"`).
fn exec_or_shell(args: &str) -> Vec<String> {
    if args.starts_with('[')
        && let Ok(v) = serde_json::from_str::<Vec<String>>(args)
    {
        return v;
    }
    vec!["/bin/sh".to_owned(), "-c".to_owned(), args.to_owned()]
}

#[derive(Debug, Clone, Default)]
struct Healthcheck {
    options: BTreeMap<String, String>,
    command: Vec<String>,
}

/// A stage with the image configuration it ends with (inherited from its base stage).
#[derive(Debug, Clone, Default)]
struct Stage {
    name: String,
    from: String,
    base_stage: Option<String>,
    instructions: Vec<Instruction>,
    user: Option<String>,
    expose: Vec<u16>,
    healthcheck: Option<Healthcheck>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: BTreeMap<String, String>,
}

fn substitute(text: &str, args: &BTreeMap<String, String>) -> String {
    let mut out = text.to_owned();
    for (k, v) in args {
        out = out
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("${k}"), v);
    }
    out
}

fn stages(instructions: &[Instruction]) -> Result<Vec<Stage>, String> {
    let mut global_args = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    for ins in instructions {
        if ins.keyword == "FROM" {
            let words: Vec<&str> = ins.args.split_whitespace().collect();
            let (image, name) = match words.as_slice() {
                [image] => (*image, format!("stage-{}", stages.len())),
                [image, kw, name] if kw.eq_ignore_ascii_case("as") => (*image, (*name).to_owned()),
                _ => {
                    return Err(format!(
                        "Dockerfile line {}: FROM {} is not understood",
                        ins.line, ins.args
                    ));
                }
            };
            let from = substitute(image, &global_args);
            let mut stage = match stages.iter().find(|s| s.name == from) {
                // A stage built on another one starts with its configuration.
                Some(base) => Stage {
                    base_stage: Some(base.name.clone()),
                    instructions: Vec::new(),
                    ..base.clone()
                },
                None => Stage::default(),
            };
            stage.name = name;
            stage.from = from;
            stages.push(stage);
            continue;
        }
        let Some(stage) = stages.last_mut() else {
            if ins.keyword == "ARG" {
                let (k, v) = ins.args.split_once('=').unwrap_or((&ins.args, ""));
                global_args.insert(k.trim().to_owned(), v.trim().to_owned());
                continue;
            }
            return Err(format!(
                "Dockerfile line {}: {} before FROM",
                ins.line, ins.keyword
            ));
        };
        match ins.keyword.as_str() {
            "USER" => stage.user = Some(ins.args.clone()),
            "EXPOSE" => {
                for p in ins.args.split_whitespace() {
                    let port = p
                        .split('/')
                        .next()
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(|| {
                            format!("Dockerfile line {}: EXPOSE {p} is not a port", ins.line)
                        })?;
                    stage.expose.push(port);
                }
            }
            "HEALTHCHECK" => {
                if ins.args.eq_ignore_ascii_case("none") {
                    stage.healthcheck = None;
                } else {
                    let (opts, cmd) = ins.args.split_once("CMD ").ok_or_else(|| {
                        format!("Dockerfile line {}: HEALTHCHECK without CMD", ins.line)
                    })?;
                    let options = opts
                        .split_whitespace()
                        .filter_map(|o| o.strip_prefix("--")?.split_once('='))
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect();
                    stage.healthcheck = Some(Healthcheck {
                        options,
                        command: exec_or_shell(cmd.trim()),
                    });
                }
            }
            "ENTRYPOINT" => stage.entrypoint = Some(exec_or_shell(&ins.args)),
            "CMD" => stage.cmd = Some(exec_or_shell(&ins.args)),
            "ENV" => {
                let (k, v) = ins
                    .args
                    .split_once('=')
                    .ok_or_else(|| format!("Dockerfile line {}: ENV needs KEY=value", ins.line))?;
                stage.env.insert(k.trim().to_owned(), v.trim().to_owned());
            }
            _ => {}
        }
        stage.instructions.push(ins.clone());
    }
    Ok(stages)
}

// ---- rendering -------------------------------------------------------------------------------

/// Splits a RUN command line into `&&`-joined commands (each with its text and its words).
/// Anything else a shell would interpret — `;`, pipes, redirections, `||`, command
/// substitution — is refused.
fn split_commands(line: usize, text: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let mut commands = Vec::new();
    let (mut words, mut word, mut raw) = (Vec::new(), String::new(), String::new());
    let mut quote: Option<char> = None;
    let mut chars = text.chars().peekable();
    let refuse = |what: &str| {
        Err(format!(
            "Dockerfile line {line}: RUN uses {what}; the recipe renderer only runs `a && b` chains of plain commands"
        ))
    };
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                raw.push(c);
            }
            (Some(_), c) => {
                word.push(c);
                raw.push(c);
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                raw.push(c);
            }
            (None, '&') if chars.peek() == Some(&'&') => {
                chars.next();
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                commands.push((raw.trim().to_owned(), std::mem::take(&mut words)));
                raw.clear();
            }
            (None, ';' | '|' | '>' | '<' | '`' | '&') => return refuse(&format!("`{c}`")),
            (None, '$') if chars.peek() == Some(&'(') => return refuse("command substitution"),
            (None, c) if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                raw.push(c);
            }
            (None, c) => {
                word.push(c);
                raw.push(c);
            }
        }
    }
    if quote.is_some() {
        return refuse("an unterminated quote");
    }
    if !word.is_empty() {
        words.push(word);
    }
    commands.push((raw.trim().to_owned(), words));
    if commands.iter().any(|(_, w)| w.is_empty()) {
        return refuse("an empty command");
    }
    Ok(commands)
}

/// A word for the script: kept as is when plain (so `$VAR` expands as in the Dockerfile's
/// shell), single-quoted otherwise.
fn sh_word(w: &str) -> String {
    if w.chars()
        .all(|c| c.is_ascii_alphanumeric() || "_/.:=,+-$@%".contains(c))
        && !w.is_empty()
    {
        w.to_owned()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

fn sh_path(p: &Path) -> String {
    sh_word(&p.to_string_lossy())
}

/// Where a stage's container paths are on this machine.
#[derive(Debug, Clone)]
struct Layout {
    /// The stage's image root.
    root: PathBuf,
    /// The directory `COPY . <dir>` put the build context in, mapped to the repository.
    context_dir: Option<String>,
}

/// What the renderer produces: the script and the final stage as laid out here.
#[derive(Debug)]
struct Recipe {
    script: String,
    final_stage: Stage,
    final_root: PathBuf,
    /// Packages the final stage's chain installs.
    runtime_packages: BTreeSet<String>,
    /// The release directory of the builds (`$CARGO_TARGET_DIR/release`).
    release_dir: Option<PathBuf>,
}

struct Renderer<'a> {
    repo: &'a Path,
    scratch: &'a Path,
    target_dir_override: Option<PathBuf>,
    stages: &'a [Stage],
    layouts: BTreeMap<String, Layout>,
    /// The WORKDIR each stage ends with.
    workdirs: BTreeMap<String, String>,
    /// Container paths each stage produced (inherited by stages built on it).
    produced: BTreeMap<String, BTreeSet<String>>,
    script: Vec<String>,
}

impl Renderer<'_> {
    fn map(&self, layout: &Layout, path: &str) -> PathBuf {
        if let Some(ctx) = &layout.context_dir {
            if path == ctx {
                return self.repo.to_path_buf();
            }
            if let Some(rest) = path.strip_prefix(&format!("{ctx}/")) {
                return self.repo.join(rest);
            }
        }
        layout.root.join(path.trim_start_matches('/'))
    }

    fn resolve(workdir: &str, path: &str) -> String {
        if path.starts_with('/') {
            path.to_owned()
        } else if path == "." || path == "./" {
            workdir.to_owned()
        } else {
            format!(
                "{}/{}",
                workdir.trim_end_matches('/'),
                path.trim_start_matches("./")
            )
        }
    }

    fn stage(&self, name: &str) -> Result<&Stage, String> {
        self.stages
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("no stage {name}"))
    }

    /// The stages `target` needs, in Dockerfile order.
    fn chain(&self, target: &str) -> Result<Vec<String>, String> {
        let mut needed = BTreeSet::new();
        let mut todo = vec![target.to_owned()];
        while let Some(name) = todo.pop() {
            if !needed.insert(name.clone()) {
                continue;
            }
            let stage = self.stage(&name)?;
            if let Some(base) = &stage.base_stage {
                todo.push(base.clone());
            }
            for ins in stage.instructions.iter().filter(|i| i.keyword == "COPY") {
                if let Some(from) = ins
                    .args
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("--from="))
                {
                    self.stage(from).map_err(|_| {
                        format!(
                            "Dockerfile line {}: COPY --from={from}: there is no such stage",
                            ins.line
                        )
                    })?;
                    todo.push(from.to_owned());
                }
            }
        }
        Ok(self
            .stages
            .iter()
            .filter(|s| needed.contains(&s.name))
            .map(|s| s.name.clone())
            .collect())
    }

    fn render(mut self, target: &str) -> Result<Recipe, String> {
        let chain = self.chain(target)?;
        self.script.push(PREAMBLE.to_owned());
        let mut runtime_packages = BTreeMap::<String, BTreeSet<String>>::new();
        let mut release_dir = None;
        for name in &chain {
            let stage = self.stage(name)?.clone();
            // Every stage has an image root of its own; a stage on another stage starts with a
            // copy of that one's root, its WORKDIR and the build context mapping.
            let root = self.scratch.join(name);
            self.script.push(format!(
                "\n# ---- stage {name} (FROM {}) ----\nmkdir -p {}",
                stage.from,
                sh_path(&root)
            ));
            let (mut layout, mut produced, mut packages, mut workdir) = match &stage.base_stage {
                Some(base) => {
                    let base_layout = self.layouts[base].clone();
                    self.script.push(format!(
                        "cp -a {}/. {}/",
                        sh_path(&base_layout.root),
                        sh_path(&root)
                    ));
                    (
                        Layout {
                            root,
                            context_dir: base_layout.context_dir,
                        },
                        self.produced[base].clone(),
                        runtime_packages[base].clone(),
                        self.workdirs[base].clone(),
                    )
                }
                None => (
                    Layout {
                        root,
                        context_dir: None,
                    },
                    BTreeSet::new(),
                    BTreeSet::new(),
                    "/".to_owned(),
                ),
            };
            // The build context's directory is known up front (ENV may name paths in it first).
            let mut wd = workdir.clone();
            for ins in &stage.instructions {
                match ins.keyword.as_str() {
                    "WORKDIR" => wd = Self::resolve(&wd, &ins.args),
                    "COPY" if !ins.args.contains("--from=") => {
                        let words: Vec<&str> = ins
                            .args
                            .split_whitespace()
                            .filter(|w| !w.starts_with("--"))
                            .collect();
                        if let [".", dest] = words.as_slice() {
                            layout.context_dir =
                                Some(Self::resolve(&wd, dest).trim_end_matches('/').to_owned());
                        }
                    }
                    _ => {}
                }
            }
            for ins in &stage.instructions {
                self.script.push(format!(
                    "# Dockerfile line {}: {} {}",
                    ins.line, ins.keyword, ins.args
                ));
                match ins.keyword.as_str() {
                    "ARG" | "LABEL" | "USER" | "EXPOSE" | "HEALTHCHECK" | "ENTRYPOINT" | "CMD" => {}
                    "WORKDIR" => {
                        workdir = Self::resolve(&workdir, &ins.args);
                        self.script.push(format!(
                            "mkdir -p {}",
                            sh_path(&self.map(&layout, &workdir))
                        ));
                    }
                    "ENV" => {
                        let (k, v) = ins.args.split_once('=').unwrap_or((&ins.args, ""));
                        let mut value = if v.starts_with('/') {
                            self.map(&layout, v).to_string_lossy().into_owned()
                        } else {
                            v.to_owned()
                        };
                        if k == "CARGO_TARGET_DIR" {
                            if let Some(dir) = &self.target_dir_override {
                                value = dir.to_string_lossy().into_owned();
                            }
                            release_dir = Some(PathBuf::from(&value).join("release"));
                        }
                        self.script.push(format!("export {k}={}", sh_word(&value)));
                    }
                    "COPY" => {
                        let lines = self.copy(ins, &layout, &workdir, &mut produced)?;
                        self.script.extend(lines);
                    }
                    "RUN" => {
                        let dir = self.map(&layout, &workdir);
                        let mut lines = Vec::new();
                        for (text, words) in split_commands(ins.line, &ins.args)? {
                            lines.push(self.command(
                                ins.line,
                                &text,
                                &words,
                                &layout,
                                &workdir,
                                &mut produced,
                                &mut packages,
                            )?);
                        }
                        self.script.push(format!(
                            "(\n  cd {}\n  {}\n)",
                            sh_path(&dir),
                            lines.join("\n  ")
                        ));
                    }
                    other => {
                        return Err(format!(
                            "Dockerfile line {}: {other} is not rendered",
                            ins.line
                        ));
                    }
                }
            }
            self.layouts.insert(name.clone(), layout);
            self.workdirs.insert(name.clone(), workdir);
            self.produced.insert(name.clone(), produced);
            runtime_packages.insert(name.clone(), packages);
        }
        let final_stage = self.stage(target)?.clone();
        Ok(Recipe {
            script: self.script.join("\n") + "\necho 'recipe: done'\n",
            final_root: self.layouts[target].root.clone(),
            runtime_packages: runtime_packages.remove(target).unwrap_or_default(),
            final_stage,
            release_dir,
        })
    }

    fn copy(
        &self,
        ins: &Instruction,
        layout: &Layout,
        workdir: &str,
        produced: &mut BTreeSet<String>,
    ) -> Result<Vec<String>, String> {
        let mut lines = Vec::new();
        let mut from = None;
        let mut paths = Vec::new();
        for w in ins.args.split_whitespace() {
            if let Some(stage) = w.strip_prefix("--from=") {
                from = Some(stage.to_owned());
            } else if w.starts_with("--chown=") || w.starts_with("--chmod=") {
                // Ownership and modes inside an image; the copies here keep the built modes.
            } else if w.starts_with("--") {
                return Err(format!(
                    "Dockerfile line {}: COPY option {w} is not supported",
                    ins.line
                ));
            } else {
                paths.push(w.to_owned());
            }
        }
        let Some((dest, sources)) = paths.split_last() else {
            return Err(format!(
                "Dockerfile line {}: COPY needs a source and a destination",
                ins.line
            ));
        };
        let dest = Self::resolve(workdir, dest);
        match from {
            None if sources == ["."] => {
                // The build context: this stage's context_dir is the repository itself.
                lines.push(format!("# (copy-free: {dest} is the repository)"));
            }
            None => {
                return Err(format!(
                    "Dockerfile line {}: COPY of single context files is not rendered; copy the context with `COPY . <dir>`",
                    ins.line
                ));
            }
            Some(stage) => {
                let src_layout = self.layouts.get(&stage).ok_or_else(|| {
                    format!(
                        "Dockerfile line {}: COPY --from={stage} before that stage",
                        ins.line
                    )
                })?;
                let src_produced = &self.produced[&stage];
                let into_dir = dest.ends_with('/') || sources.len() > 1;
                let dest_dir = if into_dir {
                    dest.trim_end_matches('/').to_owned()
                } else {
                    parent(&dest)
                };
                lines.push(format!(
                    "mkdir -p {}",
                    sh_path(&self.map(layout, &dest_dir))
                ));
                for src in sources {
                    if !src_produced.contains(src.as_str()) {
                        return Err(format!(
                            "Dockerfile line {}: COPY --from={stage} {src}: stage {stage} does not produce {src} (it produces {src_produced:?})",
                            ins.line
                        ));
                    }
                    let target = if into_dir {
                        format!("{dest_dir}/{}", basename(src))
                    } else {
                        dest.clone()
                    };
                    lines.push(format!(
                        "cp -p {} {}",
                        sh_path(&self.map(src_layout, src)),
                        sh_path(&self.map(layout, &target))
                    ));
                    produced.insert(target);
                }
            }
        }
        Ok(lines)
    }

    #[allow(clippy::too_many_arguments)]
    fn command(
        &self,
        line: usize,
        text: &str,
        words: &[String],
        layout: &Layout,
        workdir: &str,
        produced: &mut BTreeSet<String>,
        packages: &mut BTreeSet<String>,
    ) -> Result<String, String> {
        let map_words = |words: &[String]| -> Vec<String> {
            words
                .iter()
                .map(|w| {
                    if w.starts_with('/') {
                        sh_path(&self.map(layout, w))
                    } else {
                        sh_word(w)
                    }
                })
                .collect()
        };
        let program = words[0].as_str();
        let rendered = match program {
            "apt-get" => match words.get(1).map(String::as_str) {
                Some("update") => {
                    ": apt-get update runs in apt_install when a package is missing".to_owned()
                }
                Some("install") => {
                    let mut pkgs = Vec::new();
                    for w in &words[2..] {
                        match w.as_str() {
                            "-y" | "-qq" | "-q" | "--yes" | "--no-install-recommends" => {}
                            w if w.starts_with('-') => {
                                return Err(format!(
                                    "Dockerfile line {line}: apt-get install option {w} is not supported"
                                ));
                            }
                            w => pkgs.push(w.to_owned()),
                        }
                    }
                    packages.extend(pkgs.iter().cloned());
                    format!("apt_install {}", pkgs.join(" "))
                }
                _ => return Err(format!("Dockerfile line {line}: `{text}` is not rendered")),
            },
            "rm" if words[1..] == ["-rf", "/var/lib/apt/lists/*"] => {
                ": skipped here: rm -rf /var/lib/apt/lists/* only trims the image".to_owned()
            }
            "groupadd" | "useradd" => {
                let id_flag = if program == "groupadd" {
                    "--gid"
                } else {
                    "--uid"
                };
                let id = words
                    .windows(2)
                    .find(|w| w[0] == id_flag)
                    .map(|w| w[1].clone())
                    .ok_or_else(|| {
                        format!("Dockerfile line {line}: {program} without {id_flag}")
                    })?;
                let name = words.last().cloned().unwrap_or_default();
                let db = if program == "groupadd" {
                    "group"
                } else {
                    "passwd"
                };
                // The user database is this machine's: the words are not image paths.
                let words: Vec<String> = words.iter().map(|w| sh_word(w)).collect();
                format!(
                    "ensure_id {db} {} {} {}",
                    sh_word(&name),
                    sh_word(&id),
                    words.join(" ")
                )
            }
            // The build itself: verbatim.
            "cargo" => text.to_owned(),
            "install" | "mkdir" | "cp" | "chmod" => {
                if program == "install" {
                    // install [-D] [-m MODE] -t DIR FILE…: DIR/<basename> are produced.
                    let mut dir = None;
                    let mut files = Vec::new();
                    let mut it = words[1..].iter();
                    while let Some(w) = it.next() {
                        match w.as_str() {
                            "-t" => dir = it.next().cloned(),
                            "-m" | "-o" | "-g" => {
                                it.next();
                            }
                            w if w.starts_with('-') => {}
                            w => files.push(w.to_owned()),
                        }
                    }
                    let dir = dir
                        .ok_or_else(|| format!("Dockerfile line {line}: install without -t DIR"))?;
                    let dir = Self::resolve(workdir, &dir);
                    for f in files {
                        produced.insert(format!("{}/{}", dir.trim_end_matches('/'), basename(&f)));
                    }
                }
                map_words(words).join(" ")
            }
            other => {
                return Err(format!(
                    "Dockerfile line {line}: the recipe renderer does not know how to run `{other}` outside a container (teach tests/dockerfile_recipe.rs)"
                ));
            }
        };
        Ok(rendered)
    }
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

fn parent(p: &str) -> String {
    match p.rsplit_once('/') {
        Some(("", _)) | None => "/".to_owned(),
        Some((dir, _)) => dir.to_owned(),
    }
}

const PREAMBLE: &str = r#"#!/usr/bin/env bash
# Rendered from the Dockerfile by tests/dockerfile_recipe.rs.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# apt-get install of the packages that are missing (apt-get update first, once).
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then echo "recipe: installed already: $*"; return; fi
  echo "recipe: apt-get install ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# ensure_id passwd|group NAME ID COMMAND…: runs COMMAND unless NAME exists; NAME must have ID.
ensure_id() {
  local db=$1 name=$2 id=$3; shift 3
  if ! getent "$db" "$name" >/dev/null; then "$@"; fi
  local have
  have=$(getent "$db" "$name" | cut -d: -f3)
  if [[ $have != "$id" ]]; then echo "recipe: $db entry $name has id $have, the Dockerfile says $id" >&2; exit 1; fi
}
"#;

/// Renders `target` of `dockerfile` for this machine.
fn render(dockerfile: &str, target: &str, scratch: &Path) -> Result<Recipe, String> {
    let instructions = parse(dockerfile)?;
    let stages = stages(&instructions)?;
    let renderer = Renderer {
        repo: &root(),
        scratch,
        target_dir_override: std::env::var_os("GREGOR_RECIPE_TARGET_DIR").map(PathBuf::from),
        stages: &stages,
        layouts: BTreeMap::new(),
        workdirs: BTreeMap::new(),
        produced: BTreeMap::new(),
        script: Vec::new(),
    };
    renderer.render(target)
}

// ---- running and checking --------------------------------------------------------------------

fn run_script(script: &str, dir: &Path, name: &str) -> (bool, String) {
    let path = dir.join(format!("{name}.sh"));
    std::fs::write(&path, script).expect("writing the rendered script");
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("creating the log");
    let status = Command::new("bash")
        .arg(&path)
        .current_dir(root())
        .env_remove("CARGO_MAKEFLAGS")
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .stdout(file.try_clone().expect("cloning the log handle"))
        .stderr(file)
        .status()
        .expect("running bash");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    (status.success(), text)
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `USER uid[:gid]` as numbers (a name would stop Kubernetes' runAsNonRoot from checking it).
fn user_ids(stage: &Stage) -> (u32, u32) {
    let user = stage.user.as_deref().expect("the final stage sets USER");
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    (
        uid.parse().expect("USER is a numeric uid"),
        gid.parse().expect("USER's group is a numeric gid"),
    )
}

/// A command run as the image's user with the image's environment plus `env`, like `docker
/// run` (setpriv execs directly: the pid is the program's).
fn as_image_user(
    stage: &Stage,
    image_root: &Path,
    env: &[(&str, &str)],
    argv: &[String],
) -> Command {
    let (uid, gid) = user_ids(stage);
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg("--")
        .args(argv)
        .env_clear()
        .current_dir("/");
    // The image's PATH, with the image root's directories in front of this machine's.
    let image_path = stage.env.get("PATH").cloned().unwrap_or_else(|| {
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()
    });
    let mut path: Vec<String> = image_path
        .split(':')
        .map(|d| {
            image_root
                .join(d.trim_start_matches('/'))
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    path.push(image_path);
    cmd.env("PATH", path.join(":")).env("HOME", "/nonexistent");
    for (k, v) in &stage.env {
        if k != "PATH" {
            cmd.env(k, v);
        }
    }
    cmd.envs(env.iter().copied());
    cmd
}

fn output(mut cmd: Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// The image root's file for a program named by the ENTRYPOINT, looked up on the image's PATH.
fn resolve_in_image(stage: &Stage, image_root: &Path, program: &str) -> Option<PathBuf> {
    if program.starts_with('/') {
        return Some(image_root.join(program.trim_start_matches('/'))).filter(|p| p.is_file());
    }
    let path = stage.env.get("PATH").cloned().unwrap_or_else(|| {
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()
    });
    path.split(':')
        .map(|d| image_root.join(d.trim_start_matches('/')).join(program))
        .find(|p| p.is_file())
}

/// Debian packages of debian:bookworm-slim that binaries link against: the C library, libgcc
/// and zlib (dependencies of its Essential packages) and libstdc++ (apt's).
const BASE_IMAGE_LIBRARIES: &[&str] = &["libc6", "libgcc-s1", "zlib1g", "libstdc++6"];

/// The packages owning the shared libraries `binary` loads; fails on one that is not found.
fn library_packages(binary: &Path) -> BTreeMap<String, String> {
    let out = output({
        let mut c = Command::new("ldd");
        c.arg(binary);
        c
    });
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "ldd {}: {text}", binary.display());
    assert!(
        !text.contains("not found"),
        "{} has unresolved libraries:\n{text}",
        binary.display()
    );
    let mut packages = BTreeMap::new();
    for line in text.lines() {
        let Some((_, rest)) = line.split_once("=> ") else {
            continue;
        };
        let Some(lib) = rest.split_whitespace().next() else {
            continue;
        };
        let canonical = std::fs::canonicalize(lib).unwrap_or_else(|_| PathBuf::from(lib));
        let owner = [
            PathBuf::from(lib),
            canonical.clone(),
            PathBuf::from(
                canonical
                    .to_string_lossy()
                    .replacen("/usr/lib/", "/lib/", 1),
            ),
        ]
        .iter()
        .find_map(|p| {
            let out = Command::new("dpkg-query").arg("-S").arg(p).output().ok()?;
            let s = String::from_utf8_lossy(&out.stdout).into_owned();
            out.status
                .success()
                .then(|| s.split(':').next().unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| {
            panic!(
                "no Debian package owns {lib} (linked by {})",
                binary.display()
            )
        });
        packages.insert(lib.to_owned(), owner);
    }
    packages
}

/// Whether `.dockerignore` excludes `rel` (Docker's rules: later patterns win, `!` re-includes,
/// a pattern matching a directory excludes what is under it).
fn dockerignored(patterns: &[String], rel: &str) -> bool {
    let mut excluded = false;
    for pattern in patterns {
        let (negate, pat) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern.as_str()),
        };
        let pat = pat.trim_start_matches('/').trim_end_matches('/');
        let parts: Vec<&str> = rel.split('/').collect();
        let matched = (1..=parts.len()).any(|n| glob(pat, &parts[..n].join("/")));
        if matched {
            excluded = !negate;
        }
    }
    excluded
}

/// Docker-style glob: `*` and `?` within a path segment, `**` across segments.
fn glob(pattern: &str, path: &str) -> bool {
    fn rec(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) if p.get(1) == Some(&b'*') => {
                let rest = if p.get(2) == Some(&b'/') {
                    &p[3..]
                } else {
                    &p[2..]
                };
                (0..=s.len())
                    .any(|i| (i == 0 || s[i - 1] == b'/' || rest.is_empty()) && rec(rest, &s[i..]))
            }
            (Some(b'*'), _) => {
                rec(&p[1..], s) || (!s.is_empty() && s[0] != b'/' && rec(p, &s[1..]))
            }
            (Some(b'?'), Some(c)) if *c != b'/' => rec(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => rec(&p[1..], &s[1..]),
            _ => false,
        }
    }
    rec(pattern.as_bytes(), path.as_bytes())
}

fn dockerignore_patterns(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Files the build reads that `.dockerignore` would keep out of the context: the sources in
/// cargo's dep-info of `binaries` and the workspace's manifests.
fn excluded_build_inputs(
    patterns: &[String],
    release_dir: &Path,
    binaries: &[&str],
) -> Vec<String> {
    let repo = root();
    let mut inputs = BTreeSet::new();
    for manifest in ["Cargo.toml", "Cargo.lock"] {
        inputs.insert(manifest.to_owned());
    }
    for dir in ["crates", "examples"] {
        for entry in std::fs::read_dir(repo.join(dir))
            .expect("listing workspace members")
            .flatten()
        {
            if entry.path().join("Cargo.toml").is_file() {
                inputs.insert(format!(
                    "{dir}/{}/Cargo.toml",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
    }
    inputs.insert("tests/Cargo.toml".to_owned());
    for binary in binaries {
        let dep_info = release_dir.join(format!("{binary}.d"));
        let text = std::fs::read_to_string(&dep_info)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dep_info.display()));
        let deps = text
            .split_once(": ")
            .map_or("", |(_, d)| d)
            .replace("\\ ", "\u{0}");
        for dep in deps.split_whitespace() {
            let dep = dep.replace('\u{0}', " ");
            if let Ok(rel) = Path::new(&dep).strip_prefix(&repo) {
                inputs.insert(rel.to_string_lossy().into_owned());
            }
        }
    }
    assert!(inputs.len() > 20, "too few build inputs found: {inputs:?}");
    inputs
        .into_iter()
        .filter(|rel| dockerignored(patterns, rel))
        .collect()
}

/// The scratch directory holding a stage's image root.
fn scratch_dir_of(image_root: &Path) -> PathBuf {
    image_root
        .parent()
        .expect("image roots live in a scratch directory")
        .to_path_buf()
}

/// A child process killed (SIGKILL) and reaped when dropped, also when a test panics.
#[derive(Debug)]
struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    fn child(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("the child is still owned")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn readme_default(var: &str) -> String {
    let readme = read("README.md");
    let row = readme
        .lines()
        .find(|l| l.starts_with(&format!("| `{var}` |")))
        .unwrap_or_else(|| panic!("README documents {var}"));
    row.split('|')
        .nth(2)
        .unwrap_or("")
        .trim()
        .trim_matches('`')
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dockerfile_builds_and_runs_here() -> anyhow::Result<()> {
    let dockerfile = read("Dockerfile");
    let stages =
        stages(&parse(&dockerfile).map_err(anyhow::Error::msg)?).map_err(anyhow::Error::msg)?;

    // The images are the toolchain's and the same Debian release.
    let toolchain = read("rust-toolchain.toml");
    let channel = toolchain
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel = "))
        .expect("rust-toolchain.toml has a channel")
        .trim_matches('"');
    let minor: Vec<&str> = channel.split('.').take(2).collect();
    let builder = stages
        .iter()
        .find(|s| s.name == "builder")
        .expect("a builder stage");
    assert_eq!(
        builder.from,
        format!("rust:{}-slim-bookworm", minor.join("."))
    );
    let last = stages.last().expect("stages");
    assert_eq!(
        last.name, "relay",
        "the default target (the last stage) is the relay image"
    );
    assert_eq!(last.from, "runtime");
    let runtime = stages
        .iter()
        .find(|s| s.name == "runtime")
        .expect("a runtime stage");
    assert_eq!(runtime.from, "debian:bookworm-slim");

    let dir = scratch("relay");
    let recipe = render(&dockerfile, "relay", &dir).map_err(anyhow::Error::msg)?;
    let (ok, log) = run_script(&recipe.script, &dir, "recipe-relay");
    assert!(
        ok,
        "the rendered recipe failed ({}):\n{}",
        dir.join("recipe-relay.sh").display(),
        tail(&log, 60)
    );
    assert!(log.contains("recipe: done"), "{}", tail(&log, 20));
    // The build ran with the Dockerfile's command line.
    assert!(
        recipe
            .script
            .contains("\n  cargo build --release --locked -p gregor-relay -p gregor-cli &&")
            || recipe
                .script
                .contains("\n  cargo build --release --locked -p gregor-relay -p gregor-cli\n"),
        "{}",
        recipe.script
    );

    let stage = &recipe.final_stage;
    let image = &recipe.final_root;

    // ENTRYPOINT and the CLI are on the image's PATH.
    let entrypoint = stage.entrypoint.clone().expect("an ENTRYPOINT");
    assert_eq!(entrypoint, ["gregor-relay"]);
    let relay_bin = resolve_in_image(stage, image, &entrypoint[0])
        .expect("the ENTRYPOINT resolves in the image");
    assert_eq!(relay_bin, image.join("usr/local/bin/gregor-relay"));
    let cli_bin = resolve_in_image(stage, image, "gregor").expect("the gregor CLI is in the image");

    // EXPOSE is GREGOR_RELAY_HTTP_ADDR's default port.
    let default_addr = readme_default("GREGOR_RELAY_HTTP_ADDR");
    let default_port: u16 = default_addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    assert_eq!(stage.expose, [default_port]);

    // Shared libraries: from the base image or from packages the final stage installs.
    for binary in [&relay_bin, &cli_bin] {
        for (lib, package) in library_packages(binary) {
            assert!(
                BASE_IMAGE_LIBRARIES.contains(&package.as_str())
                    || recipe.runtime_packages.contains(&package),
                "{} loads {lib} from package {package}, which neither debian:bookworm-slim nor the runtime stage ({:?}) provides",
                binary.display(),
                recipe.runtime_packages
            );
        }
    }

    // A non-root user, which the recipe created here with the Dockerfile's ids.
    let (uid, gid) = user_ids(stage);
    assert_ne!(uid, 0, "the image runs as root");
    let passwd = output({
        let mut c = Command::new("getent");
        c.args(["passwd", &uid.to_string()]);
        c
    });
    let passwd = String::from_utf8_lossy(&passwd.stdout).into_owned();
    assert!(
        passwd.starts_with("gregor:"),
        "uid {uid} is not the image's gregor user: {passwd:?}"
    );
    assert!(passwd.contains(&format!(":{uid}:{gid}:")), "{passwd}");

    // Bad configuration: exit 2 naming the variable, as the image's user.
    let out = output(as_image_user(stage, image, &[], &entrypoint));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    let out = output(as_image_user(
        stage,
        image,
        &[
            ("DATABASE_URL", "postgres://u:p@127.0.0.1:1/db"),
            ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1"),
            ("GREGOR_RELAY_BATCH_SIZE", "0"),
        ],
        &entrypoint,
    ));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("GREGOR_RELAY_BATCH_SIZE"), "{stderr}");
    let out = output(as_image_user(
        stage,
        image,
        &[],
        &["gregor".to_owned(), "--help".to_owned()],
    ));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("outbox"),
        "gregor --help: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The HEALTHCHECK, verbatim, against a relay on a real database and broker.
    let healthcheck = stage.healthcheck.clone().expect("a HEALTHCHECK");
    let timeout_s: u64 = healthcheck
        .options
        .get("timeout")
        .and_then(|t| t.trim_end_matches('s').parse().ok())
        .expect("HEALTHCHECK --timeout=<n>s");
    let db = TestDb::create("recipe").await?;
    let bootstrap = kafka_bootstrap()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let http_addr = format!("127.0.0.1:{port}");
    let check = |addr: &str| -> bool {
        let mut argv = vec!["timeout".to_owned(), timeout_s.to_string()];
        argv.extend(healthcheck.command.iter().cloned());
        let mut cmd = as_image_user(stage, image, &[("GREGOR_RELAY_HTTP_ADDR", addr)], &argv);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd.status().is_ok_and(|s| s.success())
    };
    assert!(
        !check(&http_addr),
        "the health check passed with nothing listening on {http_addr}"
    );

    let relay_log = dir.join("relay.log");
    let mut relay_cmd = as_image_user(
        stage,
        image,
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.as_str()),
            ("GREGOR_RELAY_HTTP_ADDR", http_addr.as_str()),
            ("RUST_LOG", "info"),
        ],
        &entrypoint,
    );
    relay_cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&relay_log)?);
    let mut relay = KillOnDrop(Some(relay_cmd.spawn()?));
    let healthy = wait_until(Duration::from_secs(60), "the HEALTHCHECK to pass", || {
        let ok = check(&http_addr);
        async move { Ok(ok.then_some(())) }
    })
    .await;
    let exited = relay.child().try_wait()?;
    if healthy.is_err() || exited.is_some() {
        panic!(
            "HEALTHCHECK: {healthy:?}, relay exited: {exited:?}\n{}",
            std::fs::read_to_string(&relay_log).unwrap_or_default()
        );
    }
    // setpriv exec'd the relay: the healthy process is the relay, as the image's user.
    let pid = relay.child().id();
    let status_file = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let running_as = status_file
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or("")
        .to_owned();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))?;
    assert_eq!(exe, relay_bin, "the process is the image's gregor-relay");
    let uid_s = uid.to_string();
    assert!(
        running_as.split_whitespace().skip(1).all(|u| u == uid_s),
        "the relay ran as {running_as:?}, not uid {uid}"
    );
    // SIGTERM: the relay stops, and the health check fails again.
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let mut child = relay.0.take().expect("the relay child");
    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    assert!(
        status.success(),
        "the relay exited with {status} after SIGTERM"
    );
    assert!(
        !check(&http_addr),
        "the health check passed after the relay stopped"
    );

    // .dockerignore keeps nothing the build reads out of the context.
    let release_dir = recipe
        .release_dir
        .clone()
        .expect("the Dockerfile sets CARGO_TARGET_DIR");
    let patterns = dockerignore_patterns(&read(".dockerignore"));
    let excluded = excluded_build_inputs(&patterns, &release_dir, &["gregor-relay", "gregor"]);
    assert!(
        excluded.is_empty(),
        ".dockerignore excludes build inputs: {excluded:?}"
    );
    // ... and that check is real: ignoring the SQL migrations would be caught.
    let mut broken = patterns.clone();
    broken.push("**/*.sql".to_owned());
    let excluded = excluded_build_inputs(&broken, &release_dir, &["gregor-relay", "gregor"]);
    assert!(
        excluded.contains(&"crates/gregor-outbox/migrations/0001_outbox.sql".to_owned()),
        "{excluded:?}"
    );

    // A Dockerfile that installs a binary the build does not produce fails when run.
    let broken = dockerfile.replacen(
        "$CARGO_TARGET_DIR/release/gregor-relay $CARGO_TARGET_DIR/release/gregor\n",
        "$CARGO_TARGET_DIR/release/gregor-relay $CARGO_TARGET_DIR/release/gregor-cli\n",
        1,
    );
    assert_ne!(broken, dockerfile, "the mutation applies");
    let broken = broken.replace(
        "/out/gregor-relay /out/gregor /usr/local/bin/",
        "/out/gregor-relay /out/gregor-cli /usr/local/bin/",
    );
    let dir = scratch("broken-install");
    let recipe = render(&broken, "relay", &dir).map_err(anyhow::Error::msg)?;
    let (ok, log) = run_script(&recipe.script, &dir, "recipe-broken");
    assert!(
        !ok,
        "a recipe installing a missing binary succeeded:\n{}",
        tail(&log, 20)
    );
    assert!(log.contains("gregor-cli"), "{}", tail(&log, 20));
    assert!(
        !dir.join("relay/usr/local/bin/gregor-relay").exists(),
        "the final stage ran after a failed build"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(scratch_dir_of(image));
    Ok(())
}

#[test]
fn the_examples_target_renders() {
    // The examples image (docker-compose's order-service and shipping-service) renders: its
    // builder's outputs are what it copies, on the shared runtime stage. (Built by CI through
    // `cargo build --workspace --bins`; not rebuilt in release here.)
    let dir = scratch("examples");
    let recipe =
        render(&read("Dockerfile"), "examples", &dir).expect("the examples target renders");
    assert!(
        recipe
            .script
            .contains("cargo build --release --locked -p order-service -p shipping-service")
    );
    assert!(
        recipe
            .script
            .contains("examples/usr/local/bin/shipping-service"),
        "{}",
        recipe.script
    );
    assert!(
        recipe
            .final_stage
            .user
            .as_deref()
            .is_some_and(|u| !u.starts_with('0'))
    );
    // Compose picks the program with `command`; the image's default is the consumer.
    assert_eq!(recipe.final_stage.entrypoint, None);
    assert_eq!(
        recipe.final_stage.cmd.as_deref(),
        Some(&["shipping-service".to_owned()][..])
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_renderer_refuses_what_it_cannot_run_faithfully() {
    let dockerfile = read("Dockerfile");
    let dir = scratch("refusals");
    let refused = |text: &str, expected: &str| match render(text, "relay", &dir) {
        Ok(recipe) => panic!(
            "rendered a Dockerfile that should be refused ({expected}):\n{}",
            recipe.script
        ),
        Err(e) => assert!(e.contains(expected), "expected {expected:?} in {e:?}"),
    };
    let with = |from: &str, to: &str| {
        assert!(dockerfile.contains(from), "{from:?} is in the Dockerfile");
        dockerfile.replacen(from, to, 1)
    };

    // An instruction the renderer does not know.
    refused(
        &with(
            "WORKDIR /src\n",
            "WORKDIR /src\nADD https://example.com/tool.tgz /opt/\n",
        ),
        "unsupported instruction ADD",
    );
    // A COPY --from of a file the builder does not produce.
    refused(
        &with(
            "COPY --from=builder /out/gregor-relay ",
            "COPY --from=builder /out/gregor-relayd ",
        ),
        "stage builder does not produce /out/gregor-relayd",
    );
    // A COPY --from of a stage that does not exist.
    refused(
        &with("COPY --from=builder ", "COPY --from=build "),
        "COPY --from=build: there is no such stage",
    );
    // A command it cannot run outside a container.
    refused(
        &with(
            "RUN cargo build --release",
            "RUN curl -fsSLo /tmp/x https://example.com/x && cargo build --release",
        ),
        "does not know how to run `curl`",
    );
    // Shell plumbing it would have to interpret.
    refused(
        &with(
            "RUN cargo build --release --locked -p gregor-relay -p gregor-cli",
            "RUN cargo build --release --locked -p gregor-relay -p gregor-cli | tee /build.log",
        ),
        "RUN uses `|`",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dockerignore_matching_follows_docker() {
    let patterns = dockerignore_patterns("target\n**/*.log\nfuzz\n!fuzz/keep\ndocs/\n");
    assert!(dockerignored(&patterns, "target/release/gregor-relay"));
    assert!(dockerignored(&patterns, "crates/x/build.log"));
    assert!(dockerignored(&patterns, "build.log"));
    assert!(dockerignored(&patterns, "docs/adr/0001.md"));
    assert!(dockerignored(&patterns, "fuzz/Cargo.toml"));
    assert!(!dockerignored(&patterns, "fuzz/keep"));
    assert!(!dockerignored(&patterns, "crates/gregor-relay/src/main.rs"));
    assert!(!dockerignored(&patterns, "targets.rs"));
}
