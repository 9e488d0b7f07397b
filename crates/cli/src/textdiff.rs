//! A line diff in unified format (`@@ -a,b +c,d @@`, three lines of context): the longest
//! common subsequence of the lines between the common prefix and suffix, which for two versions
//! of one Kubernetes object is a handful of lines.

use std::fmt::Write as _;

/// One line of an edit script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op<'a> {
    Same(&'a str),
    Removed(&'a str),
    Added(&'a str),
}

/// Lines of context around each change.
const CONTEXT: usize = 3;

/// Above this many cells the middle is shown as all removed then all added (still correct,
/// just not minimal), so a huge object cannot make the diff quadratic in memory.
const MAX_CELLS: usize = 4_000_000;

/// The unified diff of `old` and `new`; empty when they are equal.
pub fn unified(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let ops = edit_script(&a, &b);
    hunks(&ops)
}

fn edit_script<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<Op<'a>> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (mid_a, mid_b) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut ops: Vec<Op<'a>> = a[..prefix].iter().map(|l| Op::Same(l)).collect();
    if mid_a.len().saturating_mul(mid_b.len()) > MAX_CELLS {
        ops.extend(mid_a.iter().map(|l| Op::Removed(l)));
        ops.extend(mid_b.iter().map(|l| Op::Added(l)));
    } else {
        ops.extend(lcs_script(mid_a, mid_b));
    }
    ops.extend(a[a.len() - suffix..].iter().map(|l| Op::Same(l)));
    ops
}

fn lcs_script<'a>(old: &[&'a str], new: &[&'a str]) -> Vec<Op<'a>> {
    let width = new.len() + 1;
    // table[row * width + col]: LCS length of old[row..] and new[col..].
    let mut table = vec![0_u32; (old.len() + 1) * width];
    for row in (0..old.len()).rev() {
        for col in (0..new.len()).rev() {
            table[row * width + col] = if old[row] == new[col] {
                table[(row + 1) * width + col + 1] + 1
            } else {
                table[(row + 1) * width + col].max(table[row * width + col + 1])
            };
        }
    }
    let (mut row, mut col) = (0, 0);
    let mut ops = Vec::with_capacity(old.len() + new.len());
    while row < old.len() && col < new.len() {
        if old[row] == new[col] {
            ops.push(Op::Same(old[row]));
            row += 1;
            col += 1;
        } else if table[(row + 1) * width + col] >= table[row * width + col + 1] {
            ops.push(Op::Removed(old[row]));
            row += 1;
        } else {
            ops.push(Op::Added(new[col]));
            col += 1;
        }
    }
    ops.extend(old[row..].iter().map(|l| Op::Removed(l)));
    ops.extend(new[col..].iter().map(|l| Op::Added(l)));
    ops
}

/// Groups the script into hunks with [`CONTEXT`] lines around each change.
fn hunks(ops: &[Op<'_>]) -> String {
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| !matches!(op, Op::Same(_)))
        .map(|(i, _)| i)
        .collect();
    let mut out = String::new();
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(CONTEXT);
        let mut end = changed[k];
        // Extend the hunk while the next change is within two contexts of this one.
        while k + 1 < changed.len() && changed[k + 1] <= end + 2 * CONTEXT + 1 {
            k += 1;
            end = changed[k];
        }
        let end = (end + CONTEXT + 1).min(ops.len());
        let old_start = 1 + ops[..start]
            .iter()
            .filter(|op| !matches!(op, Op::Added(_)))
            .count();
        let new_start = 1 + ops[..start]
            .iter()
            .filter(|op| !matches!(op, Op::Removed(_)))
            .count();
        let hunk = &ops[start..end];
        let old_len = hunk.iter().filter(|op| !matches!(op, Op::Added(_))).count();
        let new_len = hunk
            .iter()
            .filter(|op| !matches!(op, Op::Removed(_)))
            .count();
        let _ = writeln!(out, "@@ -{old_start},{old_len} +{new_start},{new_len} @@");
        for op in hunk {
            let _ = match op {
                Op::Same(l) => writeln!(out, " {l}"),
                Op::Removed(l) => writeln!(out, "-{l}"),
                Op::Added(l) => writeln!(out, "+{l}"),
            };
        }
        k += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unified;
    use std::fmt::Write as _;

    #[test]
    fn equal_texts_have_no_diff() {
        assert_eq!(unified("a\nb\n", "a\nb\n"), "");
    }

    #[test]
    fn a_changed_line_has_context_around_it() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let new = "a\nb\nc\nd\nE\nf\ng\nh\n";
        assert_eq!(
            unified(old, new),
            "@@ -2,7 +2,7 @@\n b\n c\n d\n-e\n+E\n f\n g\n h\n"
        );
    }

    #[test]
    fn distant_changes_make_two_hunks() {
        let old = (0..30).fold(String::new(), |mut text, i| {
            let _ = writeln!(text, "line{i}");
            text
        });
        let new = old
            .replace("line2\n", "two\n")
            .replace("line25\n", "twenty-five\n");
        let diff = unified(&old, &new);
        assert_eq!(diff.matches("@@ -").count(), 2, "{diff}");
        assert!(diff.contains("-line25\n+twenty-five\n"), "{diff}");
    }

    #[test]
    fn insertions_and_deletions_at_the_ends() {
        assert_eq!(unified("a\n", "a\nb\n"), "@@ -1,1 +1,2 @@\n a\n+b\n");
        assert_eq!(unified("a\nb\n", "b\n"), "@@ -1,2 +1,1 @@\n-a\n b\n");
    }
}
