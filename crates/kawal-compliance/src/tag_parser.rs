//! Finds the tests that evidence G045 controls in one Rust source file.
//!
//! Shared by `build.rs` (through `#[path]`) and this crate's unit tests, so it uses `std` only.
//!
//! A test backs a control when either
//! - a `//` or `///` comment line in the comment and attribute block directly above its
//!   `#[test]` or `#[tokio::test]` function holds the tag `G045:` followed by one or more
//!   control codes separated by commas or spaces, or
//! - the function's name holds a code in snake form (`au_1_3` for `AU-1-3`).
//!
//! Functions marked `#[ignore]` are skipped: an ignored test evidences nothing. The parser reads
//! lines, not a syntax tree: a tag inside a multi-line string literal would be read as a tag.

/// What one file yields.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// `(control code, test function name)` pairs, in file order, without repeats.
    pub tagged: Vec<(String, String)>,
    /// 1-based lines holding a tag that names no control code.
    pub malformed: Vec<usize>,
    /// 1-based lines holding a tag that is not directly above a test function.
    pub orphaned: Vec<usize>,
}

/// The comment and attribute block above the next item.
#[derive(Default)]
struct Block {
    /// `(line, codes)` for each tag in the block.
    tags: Vec<(usize, Vec<String>)>,
    is_test: bool,
    ignored: bool,
}

/// Parses one source file.
pub fn parse(source: &str) -> Parsed {
    let mut parsed = Parsed::default();
    let mut block = Block::default();
    // An attribute spanning lines: its text so far and the count of open brackets.
    let mut attribute = String::new();
    let mut depth: i64 = 0;
    for (index, line) in source.lines().enumerate() {
        let number = index + 1;
        let text = line.trim();
        if depth > 0 {
            attribute.push_str(text);
            depth += bracket_balance(text);
            if depth <= 0 {
                classify_attribute(&attribute, &mut block);
            }
            continue;
        }
        if text.is_empty() {
            continue;
        }
        if text.starts_with("//") && !text.starts_with("//!") {
            if let Some(codes) = tag_codes(text) {
                if codes.is_empty() {
                    parsed.malformed.push(number);
                } else {
                    block.tags.push((number, codes));
                }
            }
            continue;
        }
        if text.starts_with("#[") {
            attribute = text.to_owned();
            depth = bracket_balance(text);
            if depth <= 0 {
                classify_attribute(&attribute, &mut block);
            }
            continue;
        }
        let done = std::mem::take(&mut block);
        match fn_name(text) {
            Some(name) if done.is_test && !done.ignored => {
                let codes = done.tags.into_iter().flat_map(|(_, c)| c);
                for code in codes.chain(snake_codes(name)) {
                    let pair = (code, name.to_owned());
                    if !parsed.tagged.contains(&pair) {
                        parsed.tagged.push(pair);
                    }
                }
            }
            Some(_) if done.is_test => {} // ignored test: its tags are not orphans
            _ => parsed.orphaned.extend(done.tags.iter().map(|(n, _)| *n)),
        }
    }
    parsed.orphaned.extend(block.tags.iter().map(|(n, _)| *n));
    parsed
}

/// Opening minus closing square brackets.
fn bracket_balance(text: &str) -> i64 {
    text.chars().fold(0, |acc, c| match c {
        '[' => acc + 1,
        ']' => acc - 1,
        _ => acc,
    })
}

/// Marks the block as a test or an ignored item from one complete attribute (`#[...]`).
fn classify_attribute(attribute: &str, block: &mut Block) {
    let inner = attribute.trim_start_matches("#[").trim_start();
    let path: String = inner
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    match path.as_str() {
        "test" | "tokio::test" => block.is_test = true,
        "ignore" => block.ignored = true,
        _ => {}
    }
}

/// The codes after the tag marker in a comment line: `None` when there is no tag, `Some(empty)`
/// when the tag names no code. Reading stops at the first word that is not a code.
fn tag_codes(comment: &str) -> Option<Vec<String>> {
    let (_, rest) = comment.split_once("G045:")?;
    let codes = rest
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .map(|w| w.trim_end_matches(['.', ';', ')']))
        .take_while(|w| is_code(w))
        .map(str::to_owned)
        .collect();
    Some(codes)
}

/// `XX-n-n`: two upper-case ASCII letters and two numbers.
fn is_code(word: &str) -> bool {
    let mut parts = word.split('-');
    let (Some(area), Some(group), Some(item), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    area.len() == 2
        && area.chars().all(|c| c.is_ascii_uppercase())
        && is_number(group)
        && is_number(item)
}

fn is_number(word: &str) -> bool {
    !word.is_empty() && word.chars().all(|c| c.is_ascii_digit())
}

/// The function's name when the line declares a function (`pub async fn name(`).
fn fn_name(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    for word in words.by_ref() {
        match word {
            "fn" => break,
            "pub" | "pub(crate)" | "pub(super)" | "async" | "const" | "unsafe" => {}
            _ => return None,
        }
    }
    let next = words.next()?;
    let end = next
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(next.len());
    let name = next.get(..end)?;
    (!name.is_empty()).then_some(name)
}

/// Codes written in snake form inside a function name: `rejects_pl_2_3_bad_signature` gives
/// `PL-2-3`. Only the five dimension prefixes count.
fn snake_codes(name: &str) -> Vec<String> {
    let parts: Vec<&str> = name.split('_').collect();
    parts
        .windows(3)
        .filter(|w| {
            matches!(w[0], "au" | "cr" | "ds" | "pl" | "ph") && is_number(w[1]) && is_number(w[2])
        })
        .map(|w| format!("{}-{}-{}", w[0].to_ascii_uppercase(), w[1], w[2]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The sample sources are one-line literals on purpose: build.rs reads this file too, and a
    // tag at the start of a real line would index these samples as evidence.

    fn pairs(source: &str) -> Vec<(String, String)> {
        parse(source).tagged
    }

    fn pair(code: &str, name: &str) -> (String, String) {
        (code.to_owned(), name.to_owned())
    }

    #[test]
    fn reads_tag_above_test() {
        let src =
            "/// Locks the account.\n/// G045: AU-1-3, AU-2-3\n#[test]\nfn locks_after_five() {}\n";
        assert_eq!(
            pairs(src),
            [
                pair("AU-1-3", "locks_after_five"),
                pair("AU-2-3", "locks_after_five")
            ]
        );
    }

    #[test]
    fn reads_tag_after_attributes_and_tokio_tests() {
        let src = "    #[tokio::test(flavor = \"multi_thread\")]\n    // G045: DS-3-1 (idle time-out)\n    #[expect(\n        clippy::too_many_lines,\n        reason = \"[long]\"\n    )]\n    async fn expires_idle_session() {}\n";
        assert_eq!(pairs(src), [pair("DS-3-1", "expires_idle_session")]);
    }

    #[test]
    fn stops_at_first_word_that_is_not_a_code() {
        let src = "// G045: PL-2-3 PL-1-4. see also CR-1-2\n#[test]\nfn checks() {}\n";
        assert_eq!(
            pairs(src),
            [pair("PL-2-3", "checks"), pair("PL-1-4", "checks")]
        );
    }

    #[test]
    fn counts_snake_form_codes_in_test_names() {
        let src = "#[test]\nfn rejects_pl_2_3_and_pl_1_10_cases() {}\n#[test]\nfn xau_1_3_is_not_a_code() {}\n";
        assert_eq!(
            pairs(src),
            [
                pair("PL-2-3", "rejects_pl_2_3_and_pl_1_10_cases"),
                pair("PL-1-10", "rejects_pl_2_3_and_pl_1_10_cases")
            ]
        );
    }

    #[test]
    fn ignores_untagged_ignored_and_non_test_functions() {
        let src = "#[test]\nfn plain() {}\n/// G045: AU-1-1\n#[test]\n#[ignore = \"not yet\"]\nfn later() {}\n/// G045: AU-1-2\nfn helper() {}\n";
        let parsed = parse(src);
        assert!(parsed.tagged.is_empty());
        assert_eq!(parsed.orphaned, [7]);
    }

    #[test]
    fn tag_separated_from_test_by_code_is_orphaned() {
        let src = "fn a() {\n    // G045: AU-1-1\n    let x = 1;\n}\n#[test]\nfn b() {}\n// G045: AU-1-4\n";
        let parsed = parse(src);
        assert!(parsed.tagged.is_empty());
        assert_eq!(parsed.orphaned, [2, 7]);
    }

    #[test]
    fn reports_tags_without_codes_and_skips_inner_doc_comments() {
        let src = "//! G045: AU-1-1\n// G045: none yet\n#[test]\nfn t() {}\n";
        let parsed = parse(src);
        assert!(parsed.tagged.is_empty());
        assert_eq!(parsed.malformed, [2]);
        assert!(parsed.orphaned.is_empty());
    }

    #[test]
    fn does_not_repeat_a_code_given_by_tag_and_name() {
        let src = "// G045: PH-2-1\n#[test]\npub async fn ph_2_1_tamper() {}\n";
        assert_eq!(pairs(src), [pair("PH-2-1", "ph_2_1_tamper")]);
    }

    #[test]
    fn recognises_codes() {
        assert!(is_code("AU-1-10"));
        for bad in [
            "au-1-1", "AU-1", "AU-1-1-1", "AUX-1-1", "AU--1", "AU-a-1", "",
        ] {
            assert!(!is_code(bad), "{bad}");
        }
    }
}
