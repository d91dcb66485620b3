//! A reader of the Dockerfile's stages and instructions, for the tests that hold the images to
//! the rest of the repository. It does not judge the Dockerfile: hadolint does that
//! (tests/dockerfile_lint.rs); this only answers "what does stage X say".

use anyhow::{Context, bail};

/// One instruction: its keyword (upper case) and its arguments, continuation lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// `RUN`, `COPY`, …
    pub keyword: String,
    /// The rest of the instruction.
    pub args: String,
}

/// A build stage.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Its `AS` name (`#<n>` when unnamed).
    pub name: String,
    /// Its base image or stage, with the global `ARG` defaults substituted.
    pub from: String,
    /// Its instructions after `FROM`.
    pub instructions: Vec<Instruction>,
}

/// The stages of a Dockerfile, in order (the last is the default target).
#[derive(Debug, Clone)]
pub struct Dockerfile {
    /// Its stages.
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    /// The workspace's `Dockerfile`.
    pub fn load() -> anyhow::Result<Self> {
        Self::parse(&crate::repo::read("Dockerfile")?)
    }

    /// Reads `text` (comment lines dropped, also between continuation lines, as Docker does).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut lines = Vec::new();
        let mut pending = String::new();
        for raw in text.lines().map(str::trim) {
            if raw.starts_with('#') || (raw.is_empty() && pending.is_empty()) {
                continue;
            }
            match raw.strip_suffix('\\') {
                Some(part) => {
                    pending.push_str(part.trim());
                    pending.push(' ');
                }
                None => lines.push(std::mem::take(&mut pending) + raw),
            }
        }
        let mut args: Vec<(String, String)> = Vec::new();
        let mut stages: Vec<Stage> = Vec::new();
        for line in lines {
            let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
            let keyword = keyword.to_ascii_uppercase();
            let rest = rest.trim().to_owned();
            match (keyword.as_str(), stages.last_mut()) {
                ("FROM", _) => {
                    let words: Vec<&str> = rest.split_whitespace().collect();
                    let (image, name) = match words.as_slice() {
                        [image] => (*image, format!("#{}", stages.len())),
                        [image, kw, name] if kw.eq_ignore_ascii_case("as") => {
                            (*image, (*name).to_owned())
                        }
                        _ => bail!("FROM {rest} is not understood"),
                    };
                    let mut from = image.to_owned();
                    for (k, v) in &args {
                        from = from
                            .replace(&format!("${{{k}}}"), v)
                            .replace(&format!("${k}"), v);
                    }
                    stages.push(Stage {
                        name,
                        from,
                        instructions: Vec::new(),
                    });
                }
                ("ARG", None) => {
                    let (k, v) = rest.split_once('=').unwrap_or((&rest, ""));
                    args.push((k.to_owned(), v.to_owned()));
                }
                (_, None) => bail!("{keyword} before the first FROM"),
                (_, Some(stage)) => stage.instructions.push(Instruction {
                    keyword,
                    args: rest,
                }),
            }
        }
        Ok(Self { stages })
    }

    /// The stage named `name`.
    pub fn stage(&self, name: &str) -> anyhow::Result<&Stage> {
        self.stages
            .iter()
            .find(|s| s.name == name)
            .with_context(|| format!("the Dockerfile has no stage {name}"))
    }

    /// The stage names.
    pub fn stage_names(&self) -> Vec<&str> {
        self.stages.iter().map(|s| s.name.as_str()).collect()
    }

    /// The last `keyword` instruction that applies to stage `name`: its own, or else its base
    /// stage's (the image settings a stage inherits: USER, ENTRYPOINT, CMD, HEALTHCHECK…).
    pub fn effective(&self, name: &str, keyword: &str) -> anyhow::Result<Option<&Instruction>> {
        let mut stage = self.stage(name)?;
        loop {
            if let Some(ins) = stage
                .instructions
                .iter()
                .rev()
                .find(|i| i.keyword == keyword)
            {
                return Ok(Some(ins));
            }
            match self.stages.iter().find(|s| s.name == stage.from) {
                Some(base) => stage = base,
                None => return Ok(None),
            }
        }
    }

    /// The instructions of stage `name` and of the stages it is built on, base first.
    pub fn chain(&self, name: &str) -> anyhow::Result<Vec<&Instruction>> {
        let mut stages = vec![self.stage(name)?];
        while let Some(base) = stages
            .last()
            .and_then(|s| self.stages.iter().find(|b| b.name == s.from))
        {
            stages.push(base);
        }
        Ok(stages.iter().rev().flat_map(|s| &s.instructions).collect())
    }
}

/// An exec-form (`["a", "b"]`) or shell-form (`a b`) command as `argv`.
pub fn argv(args: &str) -> Vec<String> {
    match serde_json::from_str::<Vec<String>>(args) {
        Ok(v) => v,
        Err(_) => vec!["/bin/sh".to_owned(), "-c".to_owned(), args.to_owned()],
    }
}

#[cfg(test)]
mod tests {
    use super::{Dockerfile, argv};

    const TEXT: &str = "ARG BASE=debian:bookworm-slim\nFROM ${BASE} AS runtime\n\
        RUN apt-get update \\\n # a comment between continuation lines\n && true\nUSER 1:1\n\
        HEALTHCHECK --timeout=3s CMD [\"bash\", \"-c\", \"true\"]\n\
        FROM runtime AS relay\nENTRYPOINT [\"gregor-relay\"]\n";

    #[test]
    fn stages_inherit_from_their_base_stage() {
        let d = Dockerfile::parse(TEXT).expect("parses");
        assert_eq!(d.stage_names(), ["runtime", "relay"]);
        assert_eq!(
            d.stage("runtime").expect("runtime").from,
            "debian:bookworm-slim"
        );
        assert_eq!(
            d.stage("runtime").expect("runtime").instructions[0].args,
            "apt-get update && true"
        );
        let user = d.effective("relay", "USER").expect("stage").expect("USER");
        assert_eq!(user.args, "1:1");
        assert_eq!(d.chain("relay").expect("chain").len(), 4);
        assert_eq!(argv("[\"gregor-relay\"]"), ["gregor-relay"]);
        assert_eq!(argv("run it"), ["/bin/sh", "-c", "run it"]);
    }

    #[test]
    fn an_instruction_before_from_is_refused() {
        assert!(Dockerfile::parse("RUN true\nFROM x\n").is_err());
    }
}
