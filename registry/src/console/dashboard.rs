//! The acceleration dashboard: for one tenant, bytes its clusters' agents
//! got from peers versus from the registry's seed, per namespace and per
//! cluster, the origin traffic saved, the swarms an agent downloads from
//! now, and a chart of the traffic over time drawn on the server as inline SVG.
//!
//! A tenant's traffic is shown to its admins and owners (the system
//! administrator sees every tenant's), the same standing its clusters need.

use std::fmt::Write;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::{human_bytes, render, Chrome, ConsoleResult, SignedIn};
use crate::p2p::stats::{Sample, Traffic};
use crate::services::access::{self, Manage};
use crate::services::{clusters, tenants};
use crate::state::AppState;

/// One row of a traffic table.
struct Row {
    name: String,
    peers: String,
    peer_bytes: u64,
    seed: String,
    seed_bytes: u64,
    saved: String,
    active_swarms: Option<usize>,
}

fn row(name: String, t: Traffic, active_swarms: Option<usize>) -> Row {
    Row {
        name,
        peers: human_bytes(t.peers),
        peer_bytes: t.peers,
        seed: human_bytes(t.seed),
        seed_bytes: t.seed,
        saved: format!("{:.1} %", t.saved_percent()),
        active_swarms,
    }
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    chrome: Chrome,
    /// Tenants whose traffic the user may see.
    tenants: Vec<String>,
    tenant: Option<String>,
    total: Option<Row>,
    active_swarms: usize,
    by_namespace: Vec<Row>,
    by_cluster: Vec<Row>,
    chart: String,
    /// The time between the chart's points, e.g. `1 min`.
    interval: String,
    /// Most points the chart keeps.
    samples: usize,
}

impl DashboardPage {
    fn selected(&self, t: &str) -> bool {
        self.tenant.as_deref() == Some(t)
    }
}

/// Which tenant.
#[derive(Deserialize)]
pub struct Which {
    #[serde(default)]
    tenant: Option<String>,
}

/// `GET /console/dashboard?tenant=<name>`.
pub async fn show(State(state): State<AppState>, who: SignedIn, Query(which): Query<Which>) -> ConsoleResult<Response> {
    let caller = who.caller();
    let mut visible = Vec::new();
    for t in tenants::visible(&state, &caller).await? {
        if access::tenant::<Manage>(&state, &caller, &t.name, None).await.is_ok() {
            visible.push(t.name);
        }
    }
    let wanted = which.tenant.filter(|t| !t.is_empty()).or_else(|| visible.first().cloned());
    let mut page = DashboardPage {
        chrome: who.chrome(&state, "dashboard").await,
        tenants: visible,
        tenant: None,
        total: None,
        active_swarms: 0,
        by_namespace: Vec::new(),
        by_cluster: Vec::new(),
        chart: String::new(),
        interval: interval(state.config.traffic_sample_secs),
        samples: crate::p2p::stats::SAMPLES,
    };
    if let Some(name) = wanted {
        // The check refuses a tenant named in the URL that the user may not manage.
        let access = access::tenant::<Manage>(&state, &caller, &name, None).await?;
        let tenant = access.tenant().clone();
        let traffic = state.p2p_stats.of_tenant(&state.db, tenant.id).await?;
        let clusters = clusters::list(&state, &access).await?;
        let active = |id| traffic.active_swarms.iter().find(|(c, _)| *c == id).map_or(0, |(_, n)| *n);
        page.by_cluster = clusters
            .iter()
            .map(|c| {
                let t = traffic.by_cluster.iter().find(|(id, _)| *id == c.id).map(|(_, t)| *t).unwrap_or_default();
                row(c.name.clone(), t, Some(active(c.id)))
            })
            .collect();
        page.by_namespace = traffic.by_namespace.iter().map(|(n, t)| row(n.clone(), *t, None)).collect();
        page.active_swarms = traffic.active_swarms.iter().map(|(_, n)| n).sum();
        page.total = Some(row(tenant.name.clone(), traffic.total, None));
        page.chart = chart(&traffic.series, &page.interval);
        page.tenant = Some(tenant.name);
    }
    Ok(render(&page))
}

/// `60 s`, `5 min`: the length of the chart's intervals.
fn interval(secs: u64) -> String {
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// A line chart of bytes per interval (`per`, e.g. `1 min`) from peers and
/// from the seed. Only numbers and our own words go into the markup, so it
/// needs no escaping.
fn chart(series: &[Sample], per: &str) -> String {
    const W: f64 = 720.0;
    const H: f64 = 220.0;
    const PAD: f64 = 40.0;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-labelledby=\"chart-title\" \
         xmlns=\"http://www.w3.org/2000/svg\"><title id=\"chart-title\">Bytes per {per} from peers (blue) and \
         from the seed (orange)</title>"
    );
    let top = series.iter().map(|s| s.traffic.peers.max(s.traffic.seed)).max().unwrap_or(0);
    // The scale's top: the largest point, or no number at all while nothing moved.
    let label = if top == 0 {
        format!("no bytes moved yet (points every {per})")
    } else {
        format!("{} per {per}", human_bytes(top))
    };
    let top = top.max(1);
    let _ = write!(
        svg,
        "<line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#d8dde5\"/>\
         <line x1=\"{PAD}\" y1=\"{t}\" x2=\"{PAD}\" y2=\"{b}\" stroke=\"#d8dde5\"/>\
         <text x=\"{PAD}\" y=\"14\" font-size=\"12\" fill=\"#5b6675\" id=\"chart-scale\">{label}</text>",
        b = H - PAD,
        r = W - 10.0,
        t = 20.0,
    );
    if series.len() < 2 {
        let _ = write!(
            svg,
            "<text x=\"{x}\" y=\"{y}\" font-size=\"14\" fill=\"#5b6675\">Not enough samples yet: the chart fills in \
             as agents pull.</text>",
            x = PAD + 10.0,
            y = H / 2.0
        );
    } else {
        let step = (W - PAD - 10.0) / (series.len() - 1) as f64;
        let scale = (H - PAD - 20.0) / top as f64;
        for (pick, colour) in [(0usize, "#0b6bcb"), (1, "#d97706")] {
            let mut points = String::new();
            for (i, s) in series.iter().enumerate() {
                let v = if pick == 0 { s.traffic.peers } else { s.traffic.seed };
                let _ = write!(points, "{:.1},{:.1} ", PAD + step * i as f64, H - PAD - v as f64 * scale);
            }
            let _ = write!(
                svg,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
                points.trim_end()
            );
        }
    }
    if let (Some(first), Some(last)) = (series.first(), series.last()) {
        // Times only: the first and last sample, at the ends of the axis.
        let _ = write!(
            svg,
            "<text x=\"{PAD}\" y=\"{y}\" font-size=\"11\" fill=\"#5b6675\">{}</text>\
             <text x=\"{r}\" y=\"{y}\" font-size=\"11\" fill=\"#5b6675\" text-anchor=\"end\">{}</text>",
            clock(first.at),
            clock(last.at),
            y = H - PAD + 14.0,
            r = W - 10.0,
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{PAD}\" y=\"{y}\" font-size=\"12\" fill=\"#0b6bcb\">from peers</text>\
         <text x=\"{x}\" y=\"{y}\" font-size=\"12\" fill=\"#d97706\">from the seed</text></svg>",
        y = H - 6.0,
        x = PAD + 90.0
    );
    svg
}

/// `HH:MM:SS UTC` of a Unix time.
fn clock(secs: i64) -> String {
    super::utc(secs).split_once(' ').map_or_else(String::new, |(_, time)| time.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_chart_states_its_interval_and_no_made_up_scale() {
        let empty = chart(&[], "1 min");
        assert!(empty.contains(">no bytes moved yet (points every 1 min)</text>"), "{empty}");
        assert!(!empty.contains("1 B"), "{empty}");
        let one = Sample { at: 0, traffic: Traffic { peers: 2048, seed: 10 } };
        let two = Sample { at: 60, traffic: Traffic { peers: 0, seed: 0 } };
        let drawn = chart(&[one, two], "1 min");
        assert!(drawn.contains(">2.0 KiB per 1 min</text>"), "{drawn}");
        assert_eq!((interval(60), interval(300), interval(15)), ("1 min".into(), "5 min".into(), "15 s".into()));
    }
}
