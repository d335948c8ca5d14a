//! The flood comparison as a PNG: CPU per million dropped packets and the
//! drop rate, one bar per contender.

use std::{fs, path::Path};

use anyhow::{anyhow, Context, Result};
use plotters::{
    coord::Shift,
    prelude::*,
    style::{register_font, FontStyle},
};

use crate::flood::Flood;

const SIZE: (u32, u32) = (1400, 520);
/// Labels are drawn with a system font (Debian's fonts-dejavu-core), read
/// at run time: plotters' own font lookup would pull in fontconfig.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const SMTPGATE: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const OTHERS: RGBColor = RGBColor(0x99, 0x99, 0x99);

pub fn flood(flood: &Flood, path: &Path) -> Result<()> {
    let font =
        fs::read(FONT).with_context(|| format!("reading {FONT} (install fonts-dejavu-core)"))?;
    register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| anyhow!("{FONT} is not a usable font"))?;
    let mut pixels = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let (left, right) = root.split_horizontally(SIZE.0 / 2);
        let labels: Vec<&str> = flood.contenders.iter().map(|c| c.label).collect();
        let cpu: Vec<f64> = flood
            .contenders
            .iter()
            .map(|c| c.cpu_ms_per_million)
            .collect();
        let rate: Vec<f64> = flood
            .contenders
            .iter()
            .map(|c| c.dropped_pps / 1e6)
            .collect();
        bars(
            &left,
            "Receive CPU per million SYNs dropped (ms)",
            &labels,
            &cpu,
        )?;
        bars(&right, "SYNs dropped per second (millions)", &labels, &rate)?;
        root.present().map_err(draw_error)?;
    }
    let file = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), SIZE.0, SIZE.1);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(&pixels)?;
    Ok(())
}

/// One horizontal bar per label, the smtpgate ones in colour.
fn bars(
    area: &DrawingArea<BitMapBackend, Shift>,
    title: &str,
    labels: &[&str],
    values: &[f64],
) -> Result<()> {
    let top = values.iter().copied().fold(0.0, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(170)
        .build_cartesian_2d(
            0.0..top.max(f64::MIN_POSITIVE),
            (0..labels.len()).into_segmented(),
        )
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_labels(6)
        .x_label_formatter(&|x| number(*x))
        .y_labels(labels.len())
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(i) => labels.get(*i).copied().unwrap_or_default().to_string(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(draw_error)?;
    chart
        .draw_series(
            values
                .iter()
                .zip(labels)
                .enumerate()
                .map(|(i, (&value, label))| {
                    let colour = if label.starts_with("smtpgate") {
                        SMTPGATE
                    } else {
                        OTHERS
                    };
                    let mut bar = Rectangle::new(
                        [
                            (0.0, SegmentValue::Exact(i)),
                            (value, SegmentValue::Exact(i + 1)),
                        ],
                        colour.filled(),
                    );
                    bar.set_margin(6, 6, 0, 0);
                    bar
                }),
        )
        .map_err(draw_error)?;
    chart
        .draw_series(values.iter().enumerate().map(|(i, &value)| {
            Text::new(
                format!(" {}", number(value)),
                (value, SegmentValue::CenterOf(i)),
                ("sans-serif", 15).into_font(),
            )
        }))
        .map_err(draw_error)?;
    Ok(())
}

/// Whole numbers for large values, two decimals for small ones.
fn number(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

fn draw_error<E: std::error::Error + Send + Sync + 'static>(
    e: DrawingAreaErrorKind<E>,
) -> anyhow::Error {
    anyhow!("drawing the chart: {e}")
}
