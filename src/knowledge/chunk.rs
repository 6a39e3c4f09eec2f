//! Documents into passages: parse markdown (or plain text) into blocks that
//! remember their heading path, then pack the blocks of each section into
//! chunks of about `target` tokens with `overlap` tokens carried over from
//! the previous chunk of the same section. A chunk never spans two sections,
//! so its section path is true for all of it; a block longer than a chunk
//! is split at sentence ends, then at words.
//!
//! Tokens are counted approximately (about four characters or three
//! quarters of a word each, whichever is more), which is close enough for
//! Titan and Claude tokenisers to size passages; nothing here needs exact
//! counts.

use pulldown_cmark::{Event, HeadingLevel, Parser, Tag, TagEnd};

/// What a block was in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    Paragraph,
    ListItem,
    Code,
    Quote,
    TableRow,
}

/// A run of text under a heading path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Headings above the block, outermost first.
    pub section: Vec<String>,
    pub kind: BlockKind,
    pub text: String,
}

/// A parsed document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// The first top-level heading, if any.
    pub title: Option<String>,
    pub blocks: Vec<Block>,
}

/// A passage, ready to embed and index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Position in the document, from 0.
    pub ordinal: usize,
    pub section: Vec<String>,
    pub text: String,
    pub tokens: usize,
}

/// Chunk sizes, in approximate tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSize {
    pub target: usize,
    pub overlap: usize,
}

/// Approximate token count of a text.
pub fn approx_tokens(text: &str) -> usize {
    let chars = text.chars().count();
    let words = text.split_whitespace().count();
    chars.div_ceil(4).max((words * 4).div_ceil(3))
}

/// Parses CommonMark (with tables) into blocks under their headings.
pub fn parse_markdown(source: &str) -> Parsed {
    let mut options = pulldown_cmark::Options::empty();
    options.insert(pulldown_cmark::Options::ENABLE_TABLES);
    let mut parsed = Parsed::default();
    let mut section: Vec<(HeadingLevel, String)> = Vec::new();
    let mut heading: Option<(HeadingLevel, String)> = None;
    let mut buffer = String::new();
    let mut kinds: Vec<BlockKind> = Vec::new();
    let flush = |buffer: &mut String,
                 kind: BlockKind,
                 section: &[(HeadingLevel, String)],
                 parsed: &mut Parsed| {
        let text = normalise(buffer);
        buffer.clear();
        if !text.is_empty() {
            parsed.blocks.push(Block {
                section: section.iter().map(|(_, h)| h.clone()).collect(),
                kind,
                text,
            });
        }
    };
    for event in Parser::new_ext(source, options) {
        match event {
            Event::Start(Tag::Heading { level, .. }) => heading = Some((level, String::new())),
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, text)) = heading.take() {
                    let text = normalise(&text);
                    if level == HeadingLevel::H1 && parsed.title.is_none() {
                        parsed.title = Some(text.clone());
                    }
                    section.retain(|(l, _)| *l < level);
                    section.push((level, text));
                }
            }
            Event::Start(Tag::Item) => {
                let kind = kinds.last().copied().unwrap_or(BlockKind::Paragraph);
                flush(&mut buffer, kind, &section, &mut parsed);
                kinds.push(BlockKind::ListItem);
            }
            Event::Start(Tag::CodeBlock(_)) => kinds.push(BlockKind::Code),
            Event::Start(Tag::BlockQuote(_)) => kinds.push(BlockKind::Quote),
            Event::Start(Tag::TableRow | Tag::TableHead) => kinds.push(BlockKind::TableRow),
            Event::End(TagEnd::Item)
            | Event::End(TagEnd::CodeBlock)
            | Event::End(TagEnd::BlockQuote(_))
            | Event::End(TagEnd::TableRow | TagEnd::TableHead) => {
                let kind = kinds.pop().unwrap_or(BlockKind::Paragraph);
                flush(&mut buffer, kind, &section, &mut parsed);
            }
            Event::End(TagEnd::Paragraph) => {
                // Paragraphs inside an item or quote belong to it.
                if kinds.is_empty() {
                    flush(&mut buffer, BlockKind::Paragraph, &section, &mut parsed);
                } else {
                    buffer.push('\n');
                }
            }
            Event::End(TagEnd::TableCell) => buffer.push_str(" | "),
            Event::Text(text) | Event::Code(text) => match &mut heading {
                Some((_, heading)) => heading.push_str(&text),
                None => buffer.push_str(&text),
            },
            Event::SoftBreak | Event::HardBreak => match &mut heading {
                Some((_, heading)) => heading.push(' '),
                None => buffer.push('\n'),
            },
            _ => {}
        }
    }
    flush(&mut buffer, BlockKind::Paragraph, &section, &mut parsed);
    parsed
}

/// Parses plain text: paragraphs are separated by blank lines; a short
/// first line followed by a blank line is the title.
pub fn parse_plain(source: &str) -> Parsed {
    let paragraphs: Vec<String> = source
        .split("\n\n")
        .map(normalise)
        .filter(|p| !p.is_empty())
        .collect();
    let title = paragraphs
        .first()
        .filter(|p| !p.contains('\n') && p.len() <= 120 && paragraphs.len() > 1)
        .cloned();
    let skip = usize::from(title.is_some());
    Parsed {
        blocks: paragraphs
            .into_iter()
            .skip(skip)
            .map(|text| Block {
                section: title.iter().cloned().collect(),
                kind: BlockKind::Paragraph,
                text,
            })
            .collect(),
        title,
    }
}

/// Trims every line and drops runs of blank lines.
fn normalise(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end_matches(" |")
        .to_string()
}

/// Packs each section's blocks into chunks of about `size.target` tokens.
pub fn chunk(parsed: &Parsed, size: ChunkSize) -> Vec<Chunk> {
    let target = size.target.max(8);
    let overlap = size.overlap.min(target / 2);
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut start = 0;
    while start < parsed.blocks.len() {
        let section = &parsed.blocks[start].section;
        let end = parsed.blocks[start..]
            .iter()
            .position(|b| &b.section != section)
            .map_or(parsed.blocks.len(), |n| start + n);
        let pieces: Vec<String> = parsed.blocks[start..end]
            .iter()
            .flat_map(|b| split_to_fit(&b.text, target))
            .collect();
        let mut current: Vec<String> = Vec::new();
        let mut carried = String::new();
        for piece in pieces {
            let candidate = join(&carried, &current, &piece);
            if !current.is_empty() && approx_tokens(&candidate) > target {
                let text = join(&carried, &current, "");
                carried = tail(&text, overlap);
                chunks.push(Chunk {
                    ordinal: chunks.len(),
                    section: section.clone(),
                    tokens: approx_tokens(&text),
                    text,
                });
                current.clear();
                // The carried tail must leave room for the piece.
                while !carried.is_empty()
                    && approx_tokens(&join(&carried, &current, &piece)) > target
                {
                    carried = tail(&carried, approx_tokens(&carried) / 2);
                }
            }
            current.push(piece);
        }
        if !current.is_empty() {
            let text = join(&carried, &current, "");
            chunks.push(Chunk {
                ordinal: chunks.len(),
                section: section.clone(),
                tokens: approx_tokens(&text),
                text,
            });
        }
        start = end;
    }
    chunks
}

fn join(carried: &str, pieces: &[String], next: &str) -> String {
    let mut parts: Vec<&str> = Vec::with_capacity(pieces.len() + 2);
    if !carried.is_empty() {
        parts.push(carried);
    }
    parts.extend(pieces.iter().map(String::as_str));
    if !next.is_empty() {
        parts.push(next);
    }
    parts.join("\n")
}

/// The last words of `text` worth at most `tokens`.
fn tail(text: &str, tokens: usize) -> String {
    if tokens == 0 {
        return String::new();
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut taken = 0;
    while taken < words.len()
        && approx_tokens(&words[words.len() - taken - 1..].join(" ")) <= tokens
    {
        taken += 1;
    }
    words[words.len() - taken..].join(" ")
}

/// Splits a block that is longer than `target` at sentence ends, then at
/// words; shorter blocks come back whole.
fn split_to_fit(text: &str, target: usize) -> Vec<String> {
    if approx_tokens(text) <= target {
        return vec![text.to_string()];
    }
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    for sentence in sentences(text) {
        let candidate = if current.is_empty() {
            sentence.to_string()
        } else {
            format!("{current} {sentence}")
        };
        if approx_tokens(&candidate) <= target {
            current = candidate;
            continue;
        }
        if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        if approx_tokens(sentence) <= target {
            current = sentence.to_string();
        } else {
            for word in sentence.split_whitespace() {
                let candidate = if current.is_empty() {
                    word.to_string()
                } else {
                    format!("{current} {word}")
                };
                if !current.is_empty() && approx_tokens(&candidate) > target {
                    out.push(std::mem::replace(&mut current, word.to_string()));
                } else {
                    current = candidate;
                }
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Sentences: text up to and including `.`, `!` or `?` followed by space.
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        let ends = matches!(b, b'.' | b'!' | b'?')
            && bytes.get(i + 1).is_some_and(|n| n.is_ascii_whitespace());
        if ends {
            let sentence = text[start..=i].trim();
            if !sentence.is_empty() {
                out.push(sentence);
            }
            start = i + 1;
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const POLICY: &str = "# Returns and refunds\n\nWe want you to love what you buy.\n\n## Returns\n\nReturn unworn items within **30 days**.\n\n- Keep the tags on.\n- Include the receipt.\n\n### Batik\n\nHand-drawn batik can be returned only if faulty.\n\n## Refunds\n\nRefunds reach your card in 5 to 10 working days.\n\n```\nrefund = price - shipping\n```\n\n| Method | Days |\n|---|---|\n| Card | 5 |\n";

    #[test]
    fn markdown_blocks_remember_their_headings() {
        let parsed = parse_markdown(POLICY);
        assert_eq!(parsed.title.as_deref(), Some("Returns and refunds"));
        let find = |needle: &str| {
            parsed
                .blocks
                .iter()
                .find(|b| b.text.contains(needle))
                .unwrap_or_else(|| panic!("{needle} in {:#?}", parsed.blocks))
        };
        assert_eq!(find("love what").section, ["Returns and refunds"]);
        assert_eq!(find("30 days").section, ["Returns and refunds", "Returns"]);
        assert_eq!(find("30 days").text, "Return unworn items within 30 days.");
        let item = find("Keep the tags");
        assert_eq!(item.kind, BlockKind::ListItem);
        assert_eq!(item.text, "Keep the tags on.");
        assert_eq!(
            find("Hand-drawn").section,
            ["Returns and refunds", "Returns", "Batik"]
        );
        // A sibling heading replaces the deeper ones.
        assert_eq!(
            find("working days").section,
            ["Returns and refunds", "Refunds"]
        );
        assert_eq!(find("refund = price").kind, BlockKind::Code);
        let row = find("Card");
        assert_eq!(row.kind, BlockKind::TableRow);
        assert_eq!(row.text, "Card | 5");
    }

    #[test]
    fn plain_text_has_paragraphs_and_a_title() {
        let parsed =
            parse_plain("Shipping\n\nWe ship daily.\nTwice on Fridays.\n\n\nFree above RM 150.");
        assert_eq!(parsed.title.as_deref(), Some("Shipping"));
        assert_eq!(parsed.blocks.len(), 2);
        assert_eq!(parsed.blocks[0].text, "We ship daily.\nTwice on Fridays.");
        assert_eq!(parsed.blocks[1].section, ["Shipping"]);
    }

    #[test]
    fn chunks_keep_to_their_section_and_size() {
        let chunks = chunk(
            &parse_markdown(POLICY),
            ChunkSize {
                target: 40,
                overlap: 8,
            },
        );
        assert!(chunks.len() >= 4, "{chunks:#?}");
        for c in &chunks {
            assert!(c.tokens <= 40, "{c:?}");
            assert_eq!(c.tokens, approx_tokens(&c.text));
        }
        let batik = chunks
            .iter()
            .find(|c| c.text.contains("Hand-drawn"))
            .unwrap();
        assert_eq!(batik.section.last().map(String::as_str), Some("Batik"));
        assert!(!batik.text.contains("tags"), "no chunk spans two sections");
        assert_eq!(
            chunks.iter().map(|c| c.ordinal).collect::<Vec<_>>(),
            (0..chunks.len()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn long_sections_overlap_and_long_sentences_split() {
        let sentences: Vec<String> = (0..30)
            .map(|i| format!("Sentence number {i} talks about kopi and batik."))
            .collect();
        let parsed = parse_plain(&sentences.join(" "));
        let chunks = chunk(
            &parsed,
            ChunkSize {
                target: 50,
                overlap: 10,
            },
        );
        assert!(chunks.len() > 3);
        for pair in chunks.windows(2) {
            // The next chunk opens with the last words of the previous one.
            let before: Vec<&str> = pair[0].text.split_whitespace().collect();
            let after: Vec<&str> = pair[1].text.split_whitespace().collect();
            let carried = (1..=before.len().min(after.len()))
                .rev()
                .find(|k| before[before.len() - k..] == after[..*k])
                .unwrap_or(0);
            assert!(carried > 0, "no overlap between {pair:#?}");
            assert!(approx_tokens(&after[..carried].join(" ")) <= 10);
        }
        let one_long_word_run = "word ".repeat(500);
        for piece in split_to_fit(&one_long_word_run, 30) {
            assert!(approx_tokens(&piece) <= 30);
        }
    }

    proptest! {
        #[test]
        fn every_word_lands_in_a_chunk_of_bounded_size(
            paragraphs in prop::collection::vec("[a-z]{1,12}( [a-z]{1,12}){0,80}\\.?", 1..12),
            target in 16usize..120,
            overlap in 0usize..20,
        ) {
            let source = paragraphs.join("\n\n");
            let parsed = parse_plain(&source);
            let chunks = chunk(&parsed, ChunkSize { target, overlap });
            let mut seen = std::collections::HashSet::new();
            for c in &chunks {
                prop_assert!(c.tokens <= target.max(8), "{} > {}", c.tokens, target);
                seen.extend(c.text.split_whitespace().map(str::to_string));
            }
            for block in &parsed.blocks {
                for word in block.text.split_whitespace() {
                    prop_assert!(seen.contains(word), "{word} lost");
                }
            }
        }
    }
}
