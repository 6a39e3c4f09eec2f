//! Source files into structured text: markdown (with a `---` front matter
//! of `key: value` lines), plain text, HTML (headings, paragraphs, list
//! items, table rows, with `<title>`, `<html lang>`, `<meta name="kind">`,
//! `<meta name="tags">` and `<link rel="canonical">`) and PDF (the text
//! layer; a PDF without one is reported as such, never skipped quietly).
//!
//! PDF extraction runs on a blocking thread under `catch_unwind`: the
//! extractor panics on some malformed files, and one bad upload must not
//! take ingestion down.

use scraper::{ElementRef, Html, Node};

use super::chunk::{Block, BlockKind, Parsed, parse_markdown, parse_plain};

/// What a document says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocMeta {
    pub title: Option<String>,
    pub kind: Option<String>,
    pub language: Option<String>,
    pub tags: Vec<String>,
    pub url: Option<String>,
}

/// A document's text and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub parsed: Parsed,
    pub meta: DocMeta,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("unsupported file type")]
    Unsupported,
    #[error("the PDF has no text layer (a scan?): run OCR on it and upload the result")]
    NoTextLayer,
    #[error("the document has no text")]
    Empty,
    #[error("could not read the document: {0}")]
    Failed(String),
}

impl ExtractError {
    /// The status recorded for the document.
    pub fn status(&self) -> &'static str {
        match self {
            ExtractError::Unsupported => "unsupported",
            ExtractError::NoTextLayer | ExtractError::Empty => "no_text",
            ExtractError::Failed(_) => "failed",
        }
    }
}

/// The formats we read, by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Plain,
    Html,
    Pdf,
}

impl Format {
    pub fn of_key(key: &str) -> Option<Format> {
        let extension = key.rsplit_once('.')?.1.to_ascii_lowercase();
        match extension.as_str() {
            "md" | "markdown" => Some(Format::Markdown),
            "txt" | "text" => Some(Format::Plain),
            "html" | "htm" => Some(Format::Html),
            "pdf" => Some(Format::Pdf),
            _ => None,
        }
    }
}

/// Extracts a document of any supported format.
pub async fn extract(key: &str, bytes: &[u8]) -> Result<Extracted, ExtractError> {
    let format = Format::of_key(key).ok_or(ExtractError::Unsupported)?;
    let extracted = match format {
        Format::Pdf => extract_pdf(bytes.to_vec()).await?,
        Format::Markdown => extract_markdown(&text_of(bytes)?),
        Format::Plain => Extracted {
            parsed: parse_plain(&text_of(bytes)?),
            meta: DocMeta::default(),
        },
        Format::Html => extract_html(&text_of(bytes)?),
    };
    if extracted.parsed.blocks.is_empty() {
        return Err(ExtractError::Empty);
    }
    Ok(extracted)
}

fn text_of(bytes: &[u8]) -> Result<String, ExtractError> {
    let text = String::from_utf8_lossy(bytes);
    Ok(text.strip_prefix('\u{feff}').unwrap_or(&text).to_string())
}

/// Splits `---` front matter off a markdown document.
pub fn front_matter(source: &str) -> (DocMeta, &str) {
    let mut meta = DocMeta::default();
    let Some(rest) = source
        .strip_prefix("---\n")
        .or_else(|| source.strip_prefix("---\r\n"))
    else {
        return (meta, source);
    };
    let Some(end) = rest.find("\n---") else {
        return (meta, source);
    };
    for line in rest[..end].lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().trim_matches('"').trim();
        if value.is_empty() {
            continue;
        }
        match key.trim().to_ascii_lowercase().as_str() {
            "title" => meta.title = Some(value.to_string()),
            "kind" | "type" => meta.kind = Some(value.to_ascii_lowercase()),
            "lang" | "language" => meta.language = Some(value.to_ascii_lowercase()),
            "url" => meta.url = Some(value.to_string()),
            "tags" => meta.tags = split_tags(value),
            _ => {}
        }
    }
    let body = &rest[end + 4..];
    let body = body.split_once('\n').map_or("", |(_, b)| b);
    (meta, body)
}

fn split_tags(value: &str) -> Vec<String> {
    value
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|t| t.trim().trim_matches('"').to_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn extract_markdown(source: &str) -> Extracted {
    let (mut meta, body) = front_matter(source);
    let parsed = parse_markdown(body);
    if meta.title.is_none() {
        meta.title = parsed.title.clone();
    }
    Extracted { parsed, meta }
}

const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "template", "head", "nav", "svg", "iframe", "form",
];
const BLOCKS: &[&str] = &[
    "p",
    "li",
    "pre",
    "blockquote",
    "tr",
    "dt",
    "dd",
    "figcaption",
    "address",
    "caption",
];

/// Walks the HTML tree: headings set the section path, block elements
/// become blocks, loose text between blocks becomes paragraphs.
struct HtmlWalker {
    parsed: Parsed,
    section: Vec<(u8, String)>,
    loose: String,
}

impl HtmlWalker {
    fn push(&mut self, kind: BlockKind, text: &str) {
        let text = collapse(text);
        if !text.is_empty() {
            self.parsed.blocks.push(Block {
                section: self.section.iter().map(|(_, h)| h.clone()).collect(),
                kind,
                text,
            });
        }
    }

    fn flush_loose(&mut self) {
        let loose = std::mem::take(&mut self.loose);
        self.push(BlockKind::Paragraph, &loose);
    }

    fn walk(&mut self, element: ElementRef) {
        for child in element.children() {
            match child.value() {
                Node::Text(text) => self.loose.push_str(text),
                Node::Element(_) => {
                    let Some(child) = ElementRef::wrap(child) else {
                        continue;
                    };
                    let name = child.value().name();
                    if SKIPPED.contains(&name) {
                        continue;
                    }
                    if let Some(level) = heading_level(name) {
                        self.flush_loose();
                        let text = collapse(&child.text().collect::<String>());
                        if level == 1 && self.parsed.title.is_none() {
                            self.parsed.title = Some(text.clone());
                        }
                        self.section.retain(|(l, _)| *l < level);
                        self.section.push((level, text));
                    } else if BLOCKS.contains(&name) {
                        self.flush_loose();
                        let kind = match name {
                            "li" | "dt" | "dd" => BlockKind::ListItem,
                            "pre" => BlockKind::Code,
                            "blockquote" => BlockKind::Quote,
                            "tr" => BlockKind::TableRow,
                            _ => BlockKind::Paragraph,
                        };
                        let text = if name == "tr" {
                            child
                                .children()
                                .filter_map(ElementRef::wrap)
                                .map(|cell| collapse(&cell.text().collect::<String>()))
                                .collect::<Vec<_>>()
                                .join(" | ")
                        } else {
                            own_text(child)
                        };
                        self.push(kind, &text);
                        // Lists nested in a list item are their own items.
                        for nested in child.children().filter_map(ElementRef::wrap) {
                            if matches!(nested.value().name(), "ul" | "ol" | "dl") {
                                self.walk(nested);
                                self.flush_loose();
                            }
                        }
                    } else {
                        if matches!(name, "br") {
                            self.loose.push('\n');
                        }
                        let is_block_container = matches!(
                            name,
                            "div" | "section" | "article" | "main" | "ul" | "ol" | "dl" | "table"
                        );
                        if is_block_container {
                            self.flush_loose();
                        }
                        self.walk(child);
                        if is_block_container {
                            self.flush_loose();
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// An element's text without the text of lists nested in it.
fn own_text(element: ElementRef) -> String {
    let mut out = String::new();
    for child in element.children() {
        match child.value() {
            Node::Text(text) => out.push_str(text),
            Node::Element(e) if matches!(e.name(), "ul" | "ol" | "dl") => {}
            Node::Element(e) if e.name() == "br" => out.push('\n'),
            Node::Element(_) => {
                if let Some(child) = ElementRef::wrap(child) {
                    out.push_str(&own_text(child));
                }
            }
            _ => {}
        }
    }
    out
}

fn heading_level(name: &str) -> Option<u8> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

/// Collapses runs of spaces inside lines and drops blank lines.
fn collapse(text: &str) -> String {
    text.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn extract_html(source: &str) -> Extracted {
    let document = Html::parse_document(source);
    let select = |css: &str| scraper::Selector::parse(css).ok();
    let first = |css: &str, attribute: &str| -> Option<String> {
        let selector = select(css)?;
        let element = document.select(&selector).next()?;
        let value = if attribute.is_empty() {
            collapse(&element.text().collect::<String>())
        } else {
            element.value().attr(attribute)?.trim().to_string()
        };
        (!value.is_empty()).then_some(value)
    };
    let meta = DocMeta {
        title: first("head > title", ""),
        kind: first("meta[name=kind]", "content").map(|k| k.to_ascii_lowercase()),
        language: first("html", "lang").map(|l| l.to_ascii_lowercase()),
        tags: first("meta[name=tags], meta[name=keywords]", "content")
            .map(|t| split_tags(&t))
            .unwrap_or_default(),
        url: first("link[rel=canonical]", "href"),
    };
    let mut walker = HtmlWalker {
        parsed: Parsed::default(),
        section: Vec::new(),
        loose: String::new(),
    };
    walker.walk(document.root_element());
    walker.flush_loose();
    let mut meta = meta;
    if meta.title.is_none() {
        meta.title = walker.parsed.title.clone();
    }
    Extracted {
        parsed: walker.parsed,
        meta,
    }
}

/// The text layer of a PDF, isolated from the extractor's panics.
async fn extract_pdf(bytes: Vec<u8>) -> Result<Extracted, ExtractError> {
    let text = tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem(&bytes))
    })
    .await
    .map_err(|e| ExtractError::Failed(format!("the extractor stopped: {e}")))?
    .map_err(|_| ExtractError::Failed("the PDF is malformed (the extractor gave up)".into()))?
    .map_err(|e| ExtractError::Failed(format!("the PDF is unreadable: {e}")))?;
    if text.chars().filter(|c| c.is_alphanumeric()).count() < 3 {
        return Err(ExtractError::NoTextLayer);
    }
    Ok(pdf_text(&text))
}

/// Turns extracted PDF text into blocks: blank lines separate paragraphs;
/// a short line on its own (no final full stop, followed by a paragraph)
/// is a heading; the first heading is the title.
pub fn pdf_text(text: &str) -> Extracted {
    let mut parsed = Parsed::default();
    let mut section: Vec<String> = Vec::new();
    let paragraphs: Vec<String> = text
        .split("\n\n")
        .map(collapse)
        .filter(|p| !p.is_empty())
        .collect();
    for paragraph in paragraphs {
        let is_heading = !paragraph.contains('\n')
            && paragraph.chars().count() <= 80
            && !paragraph.ends_with(['.', ':', ',', ';'])
            && paragraph.split_whitespace().count() <= 10;
        if is_heading {
            if parsed.title.is_none() {
                parsed.title = Some(paragraph.clone());
                section = vec![paragraph];
            } else {
                section.truncate(1);
                section.push(paragraph);
            }
            continue;
        }
        // Lines of one paragraph that the PDF broke for width join up.
        let text = paragraph.replace('\n', " ");
        parsed.blocks.push(Block {
            section: section.clone(),
            kind: BlockKind::Paragraph,
            text,
        });
    }
    if parsed.blocks.is_empty() && parsed.title.is_some() {
        // A PDF of headings only still has text worth finding.
        parsed.blocks.push(Block {
            section: Vec::new(),
            kind: BlockKind::Paragraph,
            text: parsed.title.clone().unwrap_or_default(),
        });
    }
    Extracted {
        parsed,
        meta: DocMeta::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_is_read_and_removed() {
        let source = "---\ntitle: Returns\nkind: Policy\nlang: ms\ntags: returns, refund\nurl: /help/returns\n---\n# Pulangan\n\nDalam 14 hari.\n";
        let extracted = extract_markdown(source);
        assert_eq!(extracted.meta.title.as_deref(), Some("Returns"));
        assert_eq!(extracted.meta.kind.as_deref(), Some("policy"));
        assert_eq!(extracted.meta.language.as_deref(), Some("ms"));
        assert_eq!(extracted.meta.tags, vec!["returns", "refund"]);
        assert_eq!(extracted.meta.url.as_deref(), Some("/help/returns"));
        assert_eq!(extracted.parsed.blocks.len(), 1);
        assert_eq!(extracted.parsed.blocks[0].text, "Dalam 14 hari.");
        assert_eq!(extracted.parsed.blocks[0].section, vec!["Pulangan"]);
    }

    #[test]
    fn markdown_without_front_matter_takes_its_title_from_the_heading() {
        let extracted = extract_markdown("# Care\n\n---\n\nWash cold.");
        assert_eq!(extracted.meta.title.as_deref(), Some("Care"));
        assert_eq!(extracted.meta.kind, None);
    }

    #[test]
    fn html_keeps_structure_and_metadata() {
        let source = r#"<!doctype html><html lang="en"><head><title>Size guide</title>
            <meta name="kind" content="Guide"><meta name="tags" content="size, apparel">
            <link rel="canonical" href="/help/size"><style>p{}</style><script>var x = 1;</script></head>
            <body><nav>Home | Shop</nav><h1>Size guide</h1><p>Measure   your chest.</p>
            <h2>Shirts</h2><ul><li>S: 96 cm<ul><li>slim</li></ul></li><li>M: 102 cm</li></ul>
            <table><tr><th>Size</th><th>Chest</th></tr><tr><td>L</td><td>108</td></tr></table>
            <div>Loose text <b>here</b></div><h3>Long sleeves</h3><p>Add 2 cm.</p></body></html>"#;
        let extracted = extract_html(source);
        assert_eq!(extracted.meta.title.as_deref(), Some("Size guide"));
        assert_eq!(extracted.meta.kind.as_deref(), Some("guide"));
        assert_eq!(extracted.meta.language.as_deref(), Some("en"));
        assert_eq!(extracted.meta.tags, vec!["size", "apparel"]);
        assert_eq!(extracted.meta.url.as_deref(), Some("/help/size"));
        let texts: Vec<(&str, Vec<String>)> = extracted
            .parsed
            .blocks
            .iter()
            .map(|b| (b.text.as_str(), b.section.clone()))
            .collect();
        let guide = vec!["Size guide".to_string()];
        let shirts = vec!["Size guide".to_string(), "Shirts".to_string()];
        assert_eq!(
            texts,
            vec![
                ("Measure your chest.", guide.clone()),
                ("S: 96 cm", shirts.clone()),
                ("slim", shirts.clone()),
                ("M: 102 cm", shirts.clone()),
                ("Size | Chest", shirts.clone()),
                ("L | 108", shirts.clone()),
                ("Loose text here", shirts.clone()),
                (
                    "Add 2 cm.",
                    vec!["Size guide".into(), "Shirts".into(), "Long sleeves".into()]
                ),
            ]
        );
    }

    #[test]
    fn pdf_text_finds_headings_and_joins_wrapped_lines() {
        let text = "Warranty card\n\nEvery rattan piece is covered\nfor 12 months.\n\nWhat is not covered\n\nWear and tear.";
        let extracted = pdf_text(text);
        assert_eq!(extracted.parsed.title.as_deref(), Some("Warranty card"));
        assert_eq!(
            extracted.parsed.blocks[0].text,
            "Every rattan piece is covered for 12 months."
        );
        assert_eq!(
            extracted.parsed.blocks[1].section,
            vec!["Warranty card", "What is not covered"]
        );
    }

    #[tokio::test]
    async fn unknown_formats_and_garbage_pdfs_are_reported() {
        assert_eq!(
            extract("a.docx", b"x").await.unwrap_err(),
            ExtractError::Unsupported
        );
        let err = extract("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Cat")
            .await
            .unwrap_err();
        assert_eq!(err.status(), "failed", "{err}");
        assert_eq!(
            extract("empty.md", b"---\ntitle: x\n---\n")
                .await
                .unwrap_err(),
            ExtractError::Empty
        );
    }
}
