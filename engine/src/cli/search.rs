//! `assay search "text"`: the documents most like a text, from the bundled
//! `similar` plugin's memory (the documents it has seen in earlier runs).

use anyhow::{Context as _, bail};
use assay::config::Config;
use serde_json::Value;

use super::{start_engine, stop_engine};
use crate::Outcome;

/// The plugin asked, and the kind of document it is asked with (compared,
/// never remembered).
const PLUGIN: &str = "similar";
const KIND: &str = "search";

/// Arguments of `assay search`.
#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// What to look for: words, a sentence, or a whole document's text.
    pub text: String,
    /// One JSON object per match instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One match, with where the document came from.
#[derive(Debug, serde::Serialize)]
struct Match {
    score: Option<f64>,
    document: String,
    source: Option<String>,
    kind: String,
    title: String,
    text: Value,
    trigram: Value,
    embedding: Value,
}

/// Runs the command.
pub async fn run(config: &Config, args: SearchArgs) -> anyhow::Result<Outcome> {
    if args.text.trim().is_empty() {
        bail!(
            "nothing to search for: give the text to look for, e.g. assay search \"lost luggage\""
        );
    }
    let engine = start_engine(config).await?;
    let asked = engine.pipeline().ask(PLUGIN, KIND, &args.text).await;
    let found = match asked {
        Ok(found) => found,
        Err(e) => {
            stop_engine(engine).await?;
            return Err(e).context(format!(
                "searching needs the bundled `{PLUGIN}` plugin (plugins.bundled = true, or its component in the plugin directory)"
            ));
        }
    };
    let ids: Vec<String> = found
        .iter()
        .filter_map(|f| f.data["document"].as_str().map(String::from))
        .collect();
    let conn = engine.db().connection().await?;
    let sources = conn
        .query(
            "SELECT id::text, source FROM assay.documents WHERE id::text = ANY($1)",
            &[&ids],
        )
        .await
        .context("reading where the matching documents came from")?;
    drop(conn);
    let source_of = |id: &str| {
        sources
            .iter()
            .find(|row| row.get::<_, String>(0) == id)
            .map(|row| row.get::<_, String>(1))
    };
    let matches: Vec<Match> = found
        .iter()
        .map(|f| {
            let field = |key: &str| f.data["measures"].get(key).cloned().unwrap_or(Value::Null);
            let text = |key: &str| f.data[key].as_str().unwrap_or_default().to_string();
            let document = text("document");
            Match {
                score: f.score,
                source: source_of(&document),
                document,
                kind: text("kind"),
                title: text("title"),
                text: field("text"),
                trigram: field("trigram"),
                embedding: field("embedding"),
            }
        })
        .collect();
    stop_engine(engine).await?;
    if args.json {
        for m in &matches {
            outln!("{}", serde_json::to_string(m)?);
        }
    } else if matches.is_empty() {
        outln!(
            "no similar documents (`similar` remembers the documents of earlier `assay analyze` runs)"
        );
    } else {
        print_table(&matches);
    }
    Ok(Outcome::Success)
}

fn measure(value: &Value) -> String {
    value.as_f64().map_or("-".into(), |v| format!("{v:.3}"))
}

fn print_table(matches: &[Match]) {
    let mut table = super::table([
        "score",
        "document",
        "kind",
        "first line",
        "text",
        "trigram",
        "embedding",
    ]);
    for m in matches {
        table.add_row([
            m.score.map_or("-".into(), |s| format!("{s:.3}")),
            m.source.clone().unwrap_or_else(|| m.document.clone()),
            m.kind.clone(),
            m.title.clone(),
            measure(&m.text),
            measure(&m.trigram),
            measure(&m.embedding),
        ]);
    }
    outln!("{table}");
}
