//! One table per bench: each figure beside the reference measured in the
//! same run, printed for people and written as JSON for tracking.

use std::path::Path;

use serde::Serialize;

use crate::procs::Usage;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub what: String,
    /// None when the measurement was skipped (see `note`).
    pub value: Option<f64>,
    pub unit: &'static str,
    /// The row this one is compared with, and value / reference value.
    pub reference: Option<String>,
    pub ratio: Option<f64>,
    /// The serving side and the receiving side, where there are two.
    pub server: Option<Usage>,
    pub client: Option<Usage>,
    /// A goal for this figure, and whether this run met it.
    pub target: Option<String>,
    pub met: Option<bool>,
    pub note: String,
}

impl Row {
    pub fn new(what: impl Into<String>, value: f64, unit: &'static str) -> Row {
        Row {
            what: what.into(),
            value: Some(value),
            unit,
            reference: None,
            ratio: None,
            server: None,
            client: None,
            target: None,
            met: None,
            note: String::new(),
        }
    }

    /// A measurement that could not run, with the reason the user sees.
    pub fn skipped(what: impl Into<String>, unit: &'static str, why: impl Into<String>) -> Row {
        Row { value: None, note: format!("skipped: {}", why.into()), ..Row::new(what, 0.0, unit) }
    }

    pub fn usage(mut self, server: Option<Usage>, client: Option<Usage>) -> Row {
        self.server = server;
        self.client = client;
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }

    /// Compares with `reference` (value over reference value).
    pub fn against(mut self, reference: &Row) -> Row {
        if let (Some(v), Some(r)) = (self.value, reference.value) {
            if r > 0.0 {
                self.reference = Some(reference.what.clone());
                self.ratio = Some(v / r);
            }
        }
        self
    }

    /// Records a goal and whether `met` says this run reached it.
    pub fn target(mut self, goal: impl Into<String>, met: impl FnOnce(&Row) -> Option<bool>) -> Row {
        self.met = met(&self);
        self.target = Some(goal.into());
        self
    }
}

/// The result of one bench subcommand.
#[derive(Debug, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub setup: String,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn print(&self) {
        println!("\n== {} ({})", self.bench, self.setup);
        let header = ["what", "figure", "vs reference", "peak RSS MiB srv/cli", "CPU s srv/cli", "target", "note"];
        let mut lines = vec![header.map(String::from).to_vec()];
        for r in &self.rows {
            lines.push(vec![
                r.what.clone(),
                r.value.map(|v| format!("{} {}", fmt_num(v), r.unit)).unwrap_or_else(|| "-".into()),
                match (&r.reference, r.ratio) {
                    (Some(name), Some(x)) => format!("{x:.2}x {name}"),
                    _ => String::new(),
                },
                pair(r, |u| format!("{:.0}", u.peak_rss_mib)),
                pair(r, |u| format!("{:.1}", u.cpu_seconds)),
                match (&r.target, r.met) {
                    (Some(t), Some(true)) => format!("{t}: met"),
                    (Some(t), Some(false)) => format!("{t}: NOT met"),
                    (Some(t), None) => t.clone(),
                    _ => String::new(),
                },
                r.note.clone(),
            ]);
        }
        let widths: Vec<usize> = (0..header.len()).map(|c| lines.iter().map(|l| l[c].chars().count()).max().unwrap_or(0)).collect();
        for (i, line) in lines.iter().enumerate() {
            let cells: Vec<String> = line.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            println!("| {} |", cells.join(" | "));
            if i == 0 {
                println!("|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|"));
            }
        }
    }

    /// Writes `<dir>/<bench>.json`.
    pub fn write_json(&self, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}.json", self.bench));
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)?;
        Ok(path)
    }
}

fn pair(r: &Row, f: impl Fn(&Usage) -> String) -> String {
    match (&r.server, &r.client) {
        (None, None) => String::new(),
        (s, c) => format!("{}/{}", s.as_ref().map(&f).unwrap_or("-".into()), c.as_ref().map(&f).unwrap_or("-".into())),
    }
}

/// Three significant figures or whole numbers, whichever reads better.
fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_is_against_the_reference_and_skips_are_kept() {
        let tcp = Row::new("tcp", 1000.0, "MB/s");
        let ours = Row::new("ours", 250.0, "MB/s").against(&tcp).target(">= 0.2x tcp", |r| r.ratio.map(|x| x >= 0.2));
        assert_eq!(ours.ratio, Some(0.25));
        assert_eq!(ours.met, Some(true));
        let gone = Row::skipped("http", "MB/s", "nginx is not installed").against(&tcp);
        assert_eq!(gone.ratio, None);
        assert!(gone.note.contains("nginx"));
    }
}
