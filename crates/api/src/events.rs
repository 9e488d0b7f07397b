//! What both controllers' Kubernetes Events carry: a note bounded to the API's limit.

/// Longest event note sent (the API limit is 1 KiB); longer notes are cut and end in `…`.
pub const NOTE_LIMIT: usize = 1000;

/// `text` as an event note: `None` when empty, cut at a character boundary at [`NOTE_LIMIT`].
pub fn note(text: &str) -> Option<String> {
    let mut note = text.to_owned();
    if note.len() > NOTE_LIMIT {
        let mut cut = NOTE_LIMIT;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push('…');
    }
    (!note.is_empty()).then_some(note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_bounded_at_a_character_boundary() {
        let long = "é".repeat(2000);
        let cut = note(&long).expect("note");
        assert!(cut.len() <= NOTE_LIMIT + '…'.len_utf8(), "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert_eq!(note(""), None);
        assert_eq!(note("short").as_deref(), Some("short"));
    }
}
