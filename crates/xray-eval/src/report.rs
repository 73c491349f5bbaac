//! A self-contained HTML report: text, tables and figures embedded as data URIs, so the one file
//! can be mailed or archived and still shows everything.

use std::path::Path;

use base64::Engine;

use crate::{EvalError, Figure, DISCLAIMER};

/// One piece of a report, in reading order.
#[derive(Debug, Clone)]
pub enum Block {
    /// A section heading.
    Heading(String),
    /// A paragraph of plain text.
    Paragraph(String),
    /// A highlighted warning, e.g. what a bundle lacks.
    Notice(String),
    /// A table of plain-text cells.
    Table {
        /// Column names.
        header: Vec<String>,
        /// Rows of cells.
        rows: Vec<Vec<String>>,
    },
    /// An embedded image.
    Image {
        /// Caption under the image.
        caption: String,
        /// MIME type, e.g. `image/png`.
        mime: &'static str,
        /// The file's bytes.
        bytes: Vec<u8>,
    },
}

impl Block {
    /// A figure embedded as SVG (sharp at any zoom; the browser renders its text).
    pub fn figure(caption: impl Into<String>, figure: &Figure) -> Block {
        Block::Image {
            caption: caption.into(),
            mime: "image/svg+xml",
            bytes: figure.svg.as_bytes().to_vec(),
        }
    }
}

/// An HTML report under construction.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Page title.
    pub title: String,
    /// Content, in order.
    pub blocks: Vec<Block>,
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;\
color:#222}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;\
padding:4px 8px;text-align:right}th{background:#eee}td:first-child,th:first-child{text-align:left}\
.notice{background:#fff3cd;border:1px solid #e0b000;padding:.6em 1em;margin:1em 0}\
.disclaimer{background:#fde2e1;border:2px solid #c00;padding:.8em 1em;font-weight:bold}\
figure{margin:1.5em 0}img{max-width:100%;border:1px solid #ddd}figcaption{color:#555}";

impl Report {
    /// An empty report with a title.
    pub fn new(title: impl Into<String>) -> Report {
        Report {
            title: title.into(),
            blocks: Vec::new(),
        }
    }

    /// Appends a block.
    pub fn push(&mut self, block: Block) -> &mut Self {
        self.blocks.push(block);
        self
    }

    /// The whole page; the not-for-clinical-use notice opens and closes it.
    pub fn to_html(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let disclaimer = format!("<p class=\"disclaimer\">{}</p>\n", escape(DISCLAIMER));
        let mut html = format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n{disclaimer}",
            escape(&self.title),
            escape(&self.title)
        );
        for block in &self.blocks {
            match block {
                Block::Heading(text) => html += &format!("<h2>{}</h2>\n", escape(text)),
                Block::Paragraph(text) => html += &format!("<p>{}</p>\n", escape(text)),
                Block::Notice(text) => {
                    html += &format!("<p class=\"notice\">{}</p>\n", escape(text))
                }
                Block::Table { header, rows } => {
                    html += "<table>\n<tr>";
                    for h in header {
                        html += &format!("<th>{}</th>", escape(h));
                    }
                    html += "</tr>\n";
                    for row in rows {
                        html += "<tr>";
                        for cell in row {
                            html += &format!("<td>{}</td>", escape(cell));
                        }
                        html += "</tr>\n";
                    }
                    html += "</table>\n";
                }
                Block::Image {
                    caption,
                    mime,
                    bytes,
                } => {
                    html += &format!(
                        "<figure><img alt=\"{0}\" src=\"data:{mime};base64,{1}\">\
                         <figcaption>{0}</figcaption></figure>\n",
                        escape(caption),
                        b64.encode(bytes)
                    );
                }
            }
        }
        html + &disclaimer + "</body>\n</html>\n"
    }

    /// Writes the page to `path`.
    pub fn write(&self, path: &Path) -> Result<(), EvalError> {
        std::fs::write(path, self.to_html()).map_err(|e| EvalError::Write {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}
