//! "Did you mean": the accepted word closest to a mistyped one, for the
//! refusals of units (`10 Gbsp`), policies and orders (`deadlin`) and the
//! fields of every file evac reads (`wan_bandwith`).
//!
//! A suggestion is only made when it is likely the word meant: the same
//! letters but for case, a few edits away (one per three letters typed,
//! a swap of two neighbours counting as one edit: [`strsim::osa_distance`]),
//! or the word typed is part of the accepted one (`smallest` in
//! `smallest-first`). A wrong suggestion misleads more than none.

/// The candidate closest to `word`, if one is close enough (see the module
/// doc); on a tie the first.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let typed = word.to_lowercase();
    let letters = typed.chars().count();
    // One edit per three letters; short words (`m`, `kb`) only by case.
    let most_edits = letters / 3;
    candidates
        .into_iter()
        .filter(|candidate| *candidate != word)
        .filter_map(|candidate| {
            let accepted = candidate.to_lowercase();
            let edits = strsim::osa_distance(&typed, &accepted);
            let part_of = letters >= 3 && accepted.contains(&typed);
            (edits <= most_edits || part_of).then_some((edits, candidate))
        })
        .min_by_key(|(edits, _)| *edits)
        .map(|(_, candidate)| candidate)
}

/// `"; did you mean `x`?"` for the closest candidate, or `""`.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, candidates).map_or_else(String::new, |c| format!("; did you mean `{c}`?"))
}

/// Serde's refusal of an unknown field or enum variant (``unknown field
/// `x`, expected one of `a`, `b` ``, as every deserializer words it) with
/// the closest expected name added; any other message unchanged.
pub fn serde_message(message: &str) -> String {
    let suggestion = ["unknown field `", "unknown variant `"]
        .iter()
        .find_map(|prefix| {
            let start = message.find(prefix)? + prefix.len();
            let word = &message[start..start + message[start..].find('`')?];
            let after = &message[start + word.len() + 1..];
            let expected = &after[after.find("expected")?..];
            // The expected names are every other backquoted span.
            let names = expected.split('`').skip(1).step_by(2);
            Some(did_you_mean(word, names))
        });
    match suggestion {
        Some(suggestion) => format!("{message}{suggestion}"),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICIES: [&str; 6] = [
        "sequential",
        "parallel",
        "static",
        "aimd-local",
        "aimd-global",
        "deadline",
    ];

    #[test]
    fn a_typo_finds_the_word() {
        assert_eq!(
            closest("Gbsp", ["bps", "Kbps", "Mbps", "Gbps", "Tbps"]),
            Some("Gbps")
        );
        assert_eq!(
            closest("gbps", ["bps", "Kbps", "Mbps", "Gbps", "Tbps"]),
            Some("Gbps")
        );
        assert_eq!(closest("deadlin", POLICIES), Some("deadline"));
        assert_eq!(closest("aimd_global", POLICIES), Some("aimd-global"));
        assert_eq!(
            closest("smallest", ["as-listed", "smallest-first"]),
            Some("smallest-first")
        );
        assert_eq!(closest("kb", ["B", "KB", "MB"]), Some("KB"));
    }

    #[test]
    fn nothing_close_suggests_nothing() {
        assert_eq!(closest("fastest", POLICIES), None);
        // `m` could be minutes or metres: two letters short of `min`.
        assert_eq!(closest("m", ["us", "ms", "s", "min", "h"]), None);
        assert_eq!(closest("colour", ["name", "host", "memory", "priority"]), None);
        assert_eq!(closest("x", std::iter::empty()), None);
    }

    #[test]
    fn serde_messages_gain_the_closest_name() {
        assert_eq!(
            serde_message("unknown field `wan_bandwith`, expected one of `wan_bandwidth`, `wan_rtt`"),
            "unknown field `wan_bandwith`, expected one of `wan_bandwidth`, `wan_rtt`; \
             did you mean `wan_bandwidth`?"
        );
        assert_eq!(
            serde_message("unknown variant `deadlin`, expected `static` or `deadline`"),
            "unknown variant `deadlin`, expected `static` or `deadline`; did you mean `deadline`?"
        );
        assert_eq!(
            serde_message("unknown field `colour`, expected one of `name`, `host`"),
            "unknown field `colour`, expected one of `name`, `host`"
        );
        assert_eq!(
            serde_message("unknown field `x`, there are no fields"),
            "unknown field `x`, there are no fields"
        );
        assert_eq!(serde_message("invalid type: integer"), "invalid type: integer");
        // A message cut short is left as it is, never a panic.
        assert_eq!(serde_message("unknown field `abc"), "unknown field `abc");
    }
}
