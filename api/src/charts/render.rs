//! Drawing with plotters: line charts over time (one or more stacked panels) and grouped bar charts, as SVG
//! or PNG. Text is laid out (and, in PNG, drawn) with DejaVu Sans embedded in the binary, so no system
//! font is needed; SVG leaves drawing the text to the viewer.

use crate::error::ApiError;
use chrono::{DateTime, Utc};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Deserialize;
use std::sync::OnceLock;

/// The font family every text of a chart uses; registered from the embedded font.
const FAMILY: &str = "sans-serif";
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Line and bar colours, distinguishable for the common colour-vision deficiencies (Okabe-Ito).
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
];

/// What an empty chart says instead of lines or bars.
pub(crate) const NO_DATA: &str = "no data in window";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Svg,
    Png,
}

impl ImageFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ImageFormat::Svg => "image/svg+xml",
            ImageFormat::Png => "image/png",
        }
    }
}

/// One line: points of (unix seconds, value).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    pub name: String,
    pub points: Vec<(i64, f64)>,
}

/// One plot area of a line chart.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Panel {
    pub title: String,
    pub y_label: String,
    /// A fixed top of the y axis (100 for percentages); otherwise the data's maximum with headroom.
    pub y_max: Option<f64>,
    pub series: Vec<Series>,
}

/// Panels stacked over one time axis.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LineChart {
    pub title: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub panels: Vec<Panel>,
}

/// A group of bars, one per [`BarChart::bars`] entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BarGroup {
    pub label: String,
    pub values: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BarChart {
    pub title: String,
    pub y_label: String,
    /// Names of the bars in each group, in order (the legend).
    pub bars: Vec<String>,
    pub groups: Vec<BarGroup>,
    pub y_max: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Chart {
    Lines(LineChart),
    Bars(BarChart),
}

fn font() -> Result<(), ApiError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok { Ok(()) } else { Err(ApiError::internal("the embedded chart font does not parse")) }
}

/// `chart` as an image of `width` x `height` pixels.
pub(crate) fn render(chart: &Chart, format: ImageFormat, width: u32, height: u32) -> Result<Vec<u8>, ApiError> {
    font()?;
    match format {
        ImageFormat::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
                draw(&root, chart).map_err(ApiError::internal)?;
                root.present().map_err(ApiError::internal)?;
            }
            Ok(svg.into_bytes())
        }
        ImageFormat::Png => {
            let mut pixels = vec![0u8; width as usize * height as usize * 3];
            {
                let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
                draw(&root, chart).map_err(ApiError::internal)?;
                root.present().map_err(ApiError::internal)?;
            }
            let mut png = Vec::new();
            let mut encoder = png::Encoder::new(&mut png, width, height);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().map_err(ApiError::internal)?;
            writer.write_image_data(&pixels).map_err(ApiError::internal)?;
            writer.finish().map_err(ApiError::internal)?;
            Ok(png)
        }
    }
}

type DrawResult = Result<(), String>;

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &Chart) -> DrawResult {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    match chart {
        Chart::Lines(lines) => draw_lines(root, lines),
        Chart::Bars(bars) => draw_bars(root, bars),
    }
}

fn centered_note<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, text: &str) -> DrawResult {
    let (width, height) = area.dim_in_pixel();
    let style = TextStyle::from((FAMILY, 18).into_font())
        .color(&RGBColor(90, 90, 90))
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw_text(text, &style, (width as i32 / 2, height as i32 / 2)).map_err(|e| e.to_string())
}

/// Axis label of a time: the clock within a day, the date as well over longer windows.
fn time_label(seconds: i64, span_seconds: i64) -> String {
    let Some(time) = DateTime::<Utc>::from_timestamp(seconds, 0) else { return String::new() };
    if span_seconds > 86_400 { time.format("%m-%d %H:%M").to_string() } else { time.format("%H:%M").to_string() }
}

fn draw_lines<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &LineChart) -> DrawResult {
    let area = root.titled(&chart.title, (FAMILY, 20)).map_err(|e| e.to_string())?;
    let start = chart.start.timestamp();
    let end = chart.end.timestamp().max(start + 1);
    let span = end - start;
    let panels = area.split_evenly((chart.panels.len().max(1), 1));
    for (panel, area) in chart.panels.iter().zip(panels.iter()) {
        let data_max = panel.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0f64, f64::max);
        let y_max = panel.y_max.unwrap_or(if data_max > 0.0 { data_max * 1.1 } else { 1.0 });
        let mut plot = ChartBuilder::on(area)
            .caption(&panel.title, (FAMILY, 15))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(56)
            .build_cartesian_2d(start..end, 0f64..y_max)
            .map_err(|e| e.to_string())?;
        plot.configure_mesh()
            .x_labels(6)
            .y_labels(6)
            .x_label_formatter(&|t| time_label(*t, span))
            .y_desc(panel.y_label.as_str())
            .label_style((FAMILY, 12))
            .axis_desc_style((FAMILY, 13))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| e.to_string())?;
        if panel.series.iter().all(|s| s.points.is_empty()) {
            centered_note(&plot.plotting_area().strip_coord_spec(), NO_DATA)?;
            continue;
        }
        for (i, series) in panel.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let points: Vec<(i64, f64)> = series.points.iter().map(|&(t, v)| (t, v.clamp(0.0, y_max))).collect();
            plot.draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(series.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3)));
            // Markers keep single points (and the ends of gaps) visible.
            plot.draw_series(points.iter().map(|&p| Circle::new(p, 2, color.filled()))).map_err(|e| e.to_string())?;
        }
        plot.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .label_font((FAMILY, 12))
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn draw_bars<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &BarChart) -> DrawResult {
    let area = root.titled(&chart.title, (FAMILY, 20)).map_err(|e| e.to_string())?;
    let groups = chart.groups.len().max(1);
    let mut plot = ChartBuilder::on(&area)
        .margin(10)
        .x_label_area_size(70)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..groups as f64, 0f64..chart.y_max)
        .map_err(|e| e.to_string())?;
    plot.configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_label_formatter(&|_| String::new())
        .y_labels(6)
        .y_desc(chart.y_label.as_str())
        .label_style((FAMILY, 12))
        .axis_desc_style((FAMILY, 13))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| e.to_string())?;
    if chart.groups.is_empty() {
        return centered_note(&plot.plotting_area().strip_coord_spec(), NO_DATA);
    }
    let per_group = chart.bars.len().max(1) as f64;
    let width = 0.8 / per_group;
    for (b, name) in chart.bars.iter().enumerate() {
        let color = PALETTE[b % PALETTE.len()];
        let bars = chart.groups.iter().enumerate().map(|(g, group)| {
            let x0 = g as f64 + 0.1 + b as f64 * width;
            let value = group.values.get(b).copied().unwrap_or(0.0).clamp(0.0, chart.y_max);
            Rectangle::new([(x0, 0.0), (x0 + width * 0.92, value)], color.filled())
        });
        plot.draw_series(bars)
            .map_err(|e| e.to_string())?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    // Group labels under the bars, where plotters' own tick labels cannot be placed.
    let style = TextStyle::from((FAMILY, 12).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (g, group) in chart.groups.iter().enumerate() {
        let (x, y) = plot.backend_coord(&(g as f64 + 0.5, 0.0));
        root.draw_text(&group.label, &style, (x, y + 6)).map_err(|e| e.to_string())?;
    }
    plot.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font((FAMILY, 12))
        .draw()
        .map_err(|e| e.to_string())
}
