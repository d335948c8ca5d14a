//! The report: one JSON document, its Markdown rendering and the flood chart,
//! written together under the output directory.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::{
    agent::Agent, flood::Flood, goals::Goal, perpacket::PerPacket, propagation::Propagation,
};

#[derive(Serialize)]
pub struct Report {
    pub machine: Machine,
    pub quick: bool,
    pub per_packet: Option<PerPacket>,
    pub agent: Option<Agent>,
    pub flood: Option<Flood>,
    pub propagation: Option<Propagation>,
    pub goals: Vec<Goal>,
    pub seconds: f64,
}

/// What the numbers were measured on.
#[derive(Serialize)]
pub struct Machine {
    pub kernel: String,
    pub cpu: String,
    pub cores: usize,
}

impl Machine {
    pub fn this() -> Self {
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self { kernel, cpu, cores }
    }
}

/// Where the report went.
pub struct Written {
    pub markdown: PathBuf,
    pub json: PathBuf,
    pub chart: Option<PathBuf>,
}

impl Report {
    pub fn write(&self, dir: &Path) -> Result<Written> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = dir.join("report.json");
        fs::write(&json, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", json.display()))?;
        let chart = match &self.flood {
            Some(flood) => {
                let path = dir.join("flood.png");
                crate::chart::flood(flood, &path)?;
                Some(path)
            }
            None => None,
        };
        let markdown = dir.join("report.md");
        fs::write(&markdown, self.markdown(chart.is_some()))
            .with_context(|| format!("writing {}", markdown.display()))?;
        Ok(Written {
            markdown,
            json,
            chart,
        })
    }

    fn markdown(&self, with_chart: bool) -> String {
        let m = &self.machine;
        let mut md = format!(
            "# smtpgate benchmark\n\n\
             {cores} cores ({cpu}), Linux {kernel}{quick}; the whole run took {secs:.0} s. \
             Absolute figures from a machine like this are noisy; the ratios compare things measured \
             side by side in the same run.\n\n",
            cores = m.cores,
            cpu = m.cpu,
            kernel = m.kernel,
            quick = if self.quick { ", quick run (--quick: fewer repetitions)" } else { "" },
            secs = self.seconds,
        );
        md += &crate::goals::markdown(&self.goals);
        if let Some(p) = &self.per_packet {
            md += "\n";
            md += &p.markdown();
        }
        if let Some(a) = &self.agent {
            md += "\n";
            md += &a.markdown();
        }
        if let Some(f) = &self.flood {
            md += "\n";
            md += &f.markdown();
            if with_chart {
                md += "\n![flood comparison](flood.png)\n";
            }
        }
        if let Some(p) = &self.propagation {
            md += "\n";
            md += &p.markdown();
        }
        md
    }
}
