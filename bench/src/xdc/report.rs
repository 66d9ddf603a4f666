//! The XDC benchmark's figures: rows in the schema shared with
//! `server.json` and `cluster.json`, a printed table with each goal and
//! PASS/MISS, and the median/min/max of repeated rounds.
//!
//! Ratio convention (as in `server.json`): ratio > 1 means Meridian is
//! better than the reference; for lower-is-better figures ratio =
//! reference / value. A goal is met when ratio ≥ goal_ratio.

use serde::Serialize;

/// One figure, in the shared schema: {name, value, unit, peer,
/// peer_value, ratio, value_min, value_max, peer_min, peer_max, ratio_min,
/// ratio_max, goal_ratio, met, rounds}.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub value: Option<f64>,
    pub unit: String,
    pub peer: Option<String>,
    pub peer_value: Option<f64>,
    pub ratio: Option<f64>,
    pub value_min: Option<f64>,
    pub value_max: Option<f64>,
    pub peer_min: Option<f64>,
    pub peer_max: Option<f64>,
    pub ratio_min: Option<f64>,
    pub ratio_max: Option<f64>,
    pub goal_ratio: Option<f64>,
    pub met: Option<bool>,
    pub rounds: usize,
    /// The goal as the issue states it, for the printed table ("" if none).
    #[serde(skip)]
    pub goal_text: String,
}

/// (median, min, max) of `values`; `None` when empty.
pub fn span(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    Some((median, sorted[0], sorted[n - 1]))
}

impl Row {
    /// A figure with no reference and no goal.
    pub fn plain(name: &str, unit: &str, values: &[f64]) -> Row {
        let value = span(values);
        Row {
            name: name.to_string(),
            value: value.map(|s| s.0),
            unit: unit.to_string(),
            peer: None,
            peer_value: None,
            ratio: None,
            value_min: value.map(|s| s.1),
            value_max: value.map(|s| s.2),
            peer_min: None,
            peer_max: None,
            ratio_min: None,
            ratio_max: None,
            goal_ratio: None,
            met: None,
            rounds: values.len(),
            goal_text: String::new(),
        }
    }

    /// Adds a reference and the per-round ratios (already oriented: > 1 better).
    pub fn against(mut self, peer: &str, peer_values: &[f64], ratios: &[f64]) -> Row {
        let reference = span(peer_values);
        let ratio = span(ratios);
        self.peer = Some(peer.to_string());
        self.peer_value = reference.map(|s| s.0);
        self.peer_min = reference.map(|s| s.1);
        self.peer_max = reference.map(|s| s.2);
        self.ratio = ratio.map(|s| s.0);
        self.ratio_min = ratio.map(|s| s.1);
        self.ratio_max = ratio.map(|s| s.2);
        self
    }

    /// Adds a goal: met when the median ratio ≥ `goal_ratio`.
    pub fn goal(mut self, goal_ratio: f64, text: &str) -> Row {
        self.goal_ratio = Some(goal_ratio);
        self.met = Some(self.ratio.is_some_and(|r| r >= goal_ratio - 1e-9));
        self.goal_text = text.to_string();
        self
    }
}

fn number(value: f64, unit: &str) -> String {
    if unit == "ms" || unit == "s" || unit == "bytes/record" || value.abs() < 100.0 {
        format!("{value:.2}")
    } else {
        let whole = format!("{:.0}", value.abs());
        let mut grouped = String::new();
        for (index, digit) in whole.chars().enumerate() {
            if index > 0 && (whole.len() - index) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        if value < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        }
    }
}

fn cells(row: &Row) -> [String; 6] {
    let value = match (row.value, row.value_min, row.value_max) {
        (Some(v), Some(lo), Some(hi)) if row.rounds > 1 => {
            format!(
                "{} [{}–{}]",
                number(v, &row.unit),
                number(lo, &row.unit),
                number(hi, &row.unit)
            )
        }
        (Some(v), _, _) => number(v, &row.unit),
        _ => "-".to_string(),
    };
    let reference = match (&row.peer, row.peer_value) {
        (Some(peer), Some(v)) => format!("{peer}: {}", number(v, &row.unit)),
        _ => String::new(),
    };
    let ratio = match (row.ratio, row.ratio_min, row.ratio_max) {
        (Some(r), Some(lo), Some(hi)) if row.rounds > 1 => format!("{r:.2}× [{lo:.2}–{hi:.2}]"),
        (Some(r), _, _) => format!("{r:.2}×"),
        _ => String::new(),
    };
    let verdict = match row.met {
        Some(true) => "PASS",
        Some(false) => "MISS",
        None => "",
    };
    [
        row.name.clone(),
        row.unit.clone(),
        value,
        reference,
        ratio,
        format!("{} {verdict}", row.goal_text).trim().to_string(),
    ]
}

/// The rows as an aligned table.
pub fn table(rows: &[Row]) -> String {
    let headers = [
        "figure",
        "unit",
        "median [min–max]",
        "reference",
        "ratio (>1 better)",
        "goal",
    ];
    let body: Vec<[String; 6]> = rows.iter().map(cells).collect();
    let mut widths = headers.map(|h| h.chars().count());
    for row in &body {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell}{}", " ".repeat(width - cell.chars().count())))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let mut text = line(&headers.map(String::from));
    text.push('\n');
    text.push_str(&widths.map(|w| "-".repeat(w)).join("-+-"));
    for row in &body {
        text.push('\n');
        text.push_str(&line(row));
    }
    text
}
