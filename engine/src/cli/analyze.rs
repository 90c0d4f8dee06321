//! `assay analyze PATH…`

use std::path::PathBuf;

use anyhow::bail;
use assay::config::Config;
use assay::pipeline::{self, RunReport, input};
use futures::StreamExt as _;

use super::{start_engine, stop_engine};
use crate::Outcome;

/// Arguments of `assay analyze`.
#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    /// Files, directories (searched recursively for .txt, .md and .json) or `-` for standard input.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Kind of the documents (a .json document may name its own).
    #[arg(long, default_value = "transcript")]
    pub kind: String,
    /// Metadata for every document, as key=value (repeatable), e.g. --meta group=acme.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Print one JSON object per document instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Send every model request to the model, answering none from the
    /// inference cache (the answers are still cached for later runs).
    #[arg(long)]
    pub no_cache: bool,
}

/// Runs the command.
pub async fn run(config: &Config, args: AnalyzeArgs) -> anyhow::Result<Outcome> {
    if !input::valid_kind(&args.kind) {
        bail!(
            "--kind {:?} is not valid: {}",
            args.kind,
            assay::runtime::plugin::KIND_RULE
        );
    }
    let meta = input::parse_meta(&args.meta)?;
    let (documents, input_problems) = input::collect(&args.paths, &args.kind, &meta);
    for problem in &input_problems {
        eprintln!("warning: skipped {problem}");
    }
    if documents.is_empty() {
        bail!(
            "no documents to analyse ({} inputs could not be used)",
            input_problems.len()
        );
    }

    // Ctrl-C or SIGTERM, from here on: while starting (the engine is dropped,
    // the embedded server stopped), or between runs (those stored are kept).
    let stop = assay::service::shutdown_signal();
    tokio::pin!(stop);
    let engine = tokio::select! {
        engine = start_engine(config) => engine?,
        () = &mut stop => bail!("interrupted while starting; nothing was analysed"),
    };
    if engine.registry().plugins().is_empty() {
        stop_engine(engine).await?;
        bail!(
            "no plugins are loaded: put plugin components (*.wasm) in {} or enable `plugins.bundled`",
            config.plugins.dir.display()
        );
    }
    let pipeline = engine.pipeline().clone().bypass_caches(args.no_cache);

    let mut reports: Vec<RunReport> = Vec::new();
    let mut document_errors = Vec::new();
    let mut interrupted = false;
    {
        let mut runs = futures::stream::iter(documents)
            .map(|doc| {
                let pipeline = pipeline.clone();
                async move {
                    let source = doc.source.clone();
                    (source, pipeline.run(doc).await)
                }
            })
            .buffered(config.pipeline.concurrency.max(1));
        loop {
            tokio::select! {
                next = runs.next() => match next {
                    Some((_, Ok(report))) => {
                        if args.json {
                            outln!("{}", serde_json::to_string(&report)?);
                        }
                        reports.push(report);
                    }
                    Some((source, Err(e))) => {
                        eprintln!("error: {source}: {e}");
                        document_errors.push(source);
                    }
                    None => break,
                },
                () = &mut stop => {
                    eprintln!("interrupted: runs already stored are kept, the rest were not started or are rolled back");
                    interrupted = true;
                    break;
                }
            }
        }
    }
    drop(pipeline);

    if !args.json {
        print_table(&reports);
    }
    let failures: Vec<(String, String, String)> = reports
        .iter()
        .flat_map(|r| {
            r.failures().map(|f| {
                (
                    r.source.clone(),
                    f.plugin.clone(),
                    f.message.clone().unwrap_or_default(),
                )
            })
        })
        .collect();
    let findings: usize = reports.iter().map(|r| r.findings.len()).sum();
    eprintln!(
        "{} documents analysed, {findings} findings stored in {}",
        reports.len(),
        engine.db().target
    );
    if !failures.is_empty() {
        eprintln!(
            "{} plugin calls failed (recorded in assay.run_plugins):",
            failures.len()
        );
        for (source, plugin, message) in &failures {
            eprintln!("  {source}: plugin {plugin} {message}");
        }
    }
    print_skips(&reports);
    let engine_problems = engine.registry().problems.len();
    stop_engine(engine).await?;
    if interrupted || (reports.is_empty() && !document_errors.is_empty()) {
        bail!(
            "no complete result: {} documents could not be stored",
            document_errors.len()
        );
    }
    let clean = failures.is_empty()
        && input_problems.is_empty()
        && document_errors.is_empty()
        && engine_problems == 0;
    Ok(if clean {
        Outcome::Success
    } else {
        Outcome::Partial
    })
}

/// Plugins that would have run but were skipped (no model server, say),
/// each reason once with how many documents it applied to. Plugins the
/// documents are not for are left out.
fn print_skips(reports: &[RunReport]) {
    let mut skips: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
    for plugin in reports.iter().flat_map(|r| &r.plugins) {
        if plugin.outcome == pipeline::Outcome::Skipped
            && let Some(why) = plugin.message.as_deref()
            && why != pipeline::DOES_NOT_APPLY
        {
            *skips.entry((plugin.plugin.as_str(), why)).or_default() += 1;
        }
    }
    for ((plugin, why), documents) in skips {
        eprintln!("skipped {plugin} for {documents} documents: {why}");
    }
}

fn print_table(reports: &[RunReport]) {
    let mut table = super::table(["document", "plugin", "label", "score", "excerpt"]);
    for report in reports {
        let document = std::path::Path::new(&report.source)
            .file_name()
            .map_or_else(
                || report.source.clone(),
                |n| n.to_string_lossy().into_owned(),
            );
        for f in &report.findings {
            let excerpt = f
                .excerpt
                .clone()
                .unwrap_or_else(|| pipeline::excerpt(&f.data.to_string()));
            table.add_row([
                document.clone(),
                f.plugin.clone(),
                f.label.clone(),
                f.score.map_or_else(String::new, |s| format!("{s:.2}")),
                excerpt,
            ]);
        }
    }
    outln!("{table}");
}
