//! The engine as the bench runs it: its pipeline file pointed at the
//! bench's brokers and topics, and its process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{BenchOptions, topic};

/// The topics the engine writes to or reads besides its input and output,
/// created once for all runs.
pub(super) struct SideTopics {
    pub(super) dead_letters: String,
    pub(super) labels: String,
    pub(super) alerts: String,
}

/// The pipeline file with the bench's brokers, topics and a fresh group;
/// its own paths made absolute so it works from `dir`.
pub(super) fn engine_pipeline(
    options: &BenchOptions,
    dir: &Path,
    input: &str,
    output: &str,
    side: &SideTopics,
) -> std::io::Result<PathBuf> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let text = std::fs::read_to_string(&options.pipeline)?;
    let mut file: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| invalid(e.to_string()))?;
    let base = options
        .pipeline
        .parent()
        .unwrap_or(Path::new("."))
        .canonicalize()?;
    /// Sets `path.key` (path dotted: `kafka.consumer`), making the tables.
    fn set(file: &mut toml::Table, path: &str, key: &str, value: &str) {
        let mut table = file;
        for name in path.split('.') {
            let entry = table
                .entry(name)
                .or_insert_with(|| toml::Value::Table(Default::default()));
            let Some(inner) = entry.as_table_mut() else {
                return;
            };
            table = inner;
        }
        table.insert(key.into(), toml::Value::String(value.to_owned()));
    }
    set(&mut file, "kafka", "brokers", &options.brokers);
    set(&mut file, "kafka", "group_id", &topic("bench-group"));
    set(&mut file, "kafka", "input_topic", input);
    set(&mut file, "kafka", "output_topic", output);
    set(&mut file, "kafka", "dead_letter_topic", &side.dead_letters);
    for (section, key, name) in [
        ("labels", "topic", &side.labels),
        ("drift", "alerts_topic", &side.alerts),
    ] {
        if file.get(section).and_then(|s| s.get(key)).is_some() {
            set(&mut file, section, key, name);
        }
    }
    set(&mut file, "admin", "listen", "127.0.0.1:0");
    // Every run reads the same input from its start: its own state, or it
    // would skip what an earlier run folded in.
    if file.contains_key("state") {
        set(
            &mut file,
            "state",
            "path",
            &dir.join(topic("state")).display().to_string(),
        );
    }
    set(
        &mut file,
        "kafka.consumer",
        "fetch.wait.max.ms",
        &options.fetch_wait_ms.to_string(),
    );
    for (section, key, required) in [
        ("schema", "path", true),
        ("transform", "sql", true),
        ("model", "bundle", true),
        ("labels", "schema", false),
    ] {
        let relative = file
            .get(section)
            .and_then(|s| s.get(key))
            .and_then(toml::Value::as_str)
            .map(str::to_owned);
        let relative = match (relative, required) {
            (Some(relative), _) => relative,
            (None, false) => continue,
            (None, true) => {
                return Err(invalid(format!("the pipeline has no {section}.{key}")));
            }
        };
        set(
            &mut file,
            section,
            key,
            &base.join(relative).display().to_string(),
        );
    }
    let path = dir.join(format!("{}.toml", topic("pipeline")));
    std::fs::write(
        &path,
        toml::to_string(&file).map_err(|e| invalid(e.to_string()))?,
    )?;
    Ok(path)
}

/// The pipeline's `batch.max_rows`, as the engine will read it (its
/// default where the file sets none; a bad file refused here, by key and
/// path, before any run): the passthrough gathers batches of the same size,
/// so that the two runs differ only in the work (a batch's fixed costs are
/// spread over its rows alike).
pub(super) fn batch_rows(pipeline: &Path) -> Result<usize, crate::config::ConfigError> {
    Ok(crate::config::Pipeline::load(pipeline, None)?
        .batch
        .max_rows)
}

pub(super) fn spawn_engine(pipeline: &Path, dir: &Path) -> std::io::Result<Child> {
    let log = std::fs::File::create(dir.join("engine.log"))?;
    Command::new(std::env::current_exe()?)
        .args(["run", "--pipeline"])
        .arg(pipeline)
        .env("RUST_LOG", "streamscore=info,warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
}

#[cfg(test)]
mod tests {
    use super::batch_rows;
    use crate::config::tests::example_variant;

    #[test]
    fn the_passthrough_batches_as_the_pipeline_does() {
        let set = example_variant(|t| t.replace("max_rows = 2000", "max_rows = 777"));
        assert_eq!(batch_rows(set.path()).expect("read"), 777);
        // Without the key, the engine's default (config/file.rs), as
        // pipelines/fraud.toml documents it.
        let unset = example_variant(|t| t.replace("max_rows = 2000", ""));
        assert_eq!(batch_rows(unset.path()).expect("read"), 2000);
    }
}
