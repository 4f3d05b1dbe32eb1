//! Finding the rows a batch-wide operation fails on, by bisection.
//!
//! When the SQL fails on a batch, the rows it fails on are usually few. Run
//! on each half of the failing range, keep the halves that succeed, and split
//! the ones that fail again: one bad row among n costs about 2·log2(n) runs
//! instead of n, and a run of good rows is kept as one piece.

use std::ops::Range;

/// The result of isolating failures in rows `0..n`.
#[derive(Debug)]
pub struct Isolated<T, E> {
    /// The ranges that succeeded, in row order, with their outputs.
    pub kept: Vec<(Range<usize>, T)>,
    /// Each row that fails on its own, in row order, with its error.
    pub failed: Vec<(usize, E)>,
}

/// More than the tolerated number of rows failed; isolation stopped there.
#[derive(Debug, PartialEq, Eq)]
pub struct TooManyFailed {
    pub failed: usize,
}

/// Runs `run` on ever smaller parts of `0..rows`, which is known to fail as
/// a whole, until every row is either in a part that succeeds or fails on its
/// own. Gives up once more than `tolerated` rows have failed.
pub async fn isolate<T, E, F, Fut>(
    rows: usize,
    tolerated: usize,
    mut run: F,
) -> Result<Isolated<T, E>, TooManyFailed>
where
    F: FnMut(Range<usize>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut isolated = Isolated {
        kept: Vec::new(),
        failed: Vec::new(),
    };
    // Depth first, left half before right, so results come out in row order.
    let mut pending = halves(0..rows);
    while let Some(range) = pending.pop() {
        match run(range.clone()).await {
            Ok(output) => isolated.kept.push((range, output)),
            Err(error) if range.len() == 1 => {
                isolated.failed.push((range.start, error));
                if isolated.failed.len() > tolerated {
                    return Err(TooManyFailed {
                        failed: isolated.failed.len(),
                    });
                }
            }
            Err(_) => pending.extend(halves(range)),
        }
    }
    Ok(isolated)
}

/// The two halves of a range as a stack: the left one pops first. A range
/// of one row is its own (failed) half.
fn halves(range: Range<usize>) -> Vec<Range<usize>> {
    if range.len() <= 1 {
        return vec![range];
    }
    let middle = range.start + range.len() / 2;
    vec![middle..range.end, range.start..middle]
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// Isolates `bad` rows in `0..rows`; returns the outcome and the runs.
    async fn run_isolation(
        rows: usize,
        bad: &[usize],
        tolerated: usize,
    ) -> (Result<Isolated<usize, usize>, TooManyFailed>, usize) {
        let runs = Cell::new(0);
        let outcome = isolate(rows, tolerated, |range| {
            runs.set(runs.get() + 1);
            let first_bad = bad.iter().copied().find(|b| range.contains(b));
            async move {
                match first_bad {
                    Some(b) => Err(b),
                    None => Ok(range.len()),
                }
            }
        })
        .await;
        (outcome, runs.get())
    }

    #[tokio::test]
    async fn one_bad_row_costs_logarithmic_runs() {
        for rows in [2usize, 7, 1000, 4096] {
            for bad in [0, rows / 3, rows - 1] {
                let (outcome, runs) = run_isolation(rows, &[bad], rows).await;
                let isolated = outcome.unwrap();
                assert_eq!(isolated.failed, vec![(bad, bad)]);
                let kept: usize = isolated.kept.iter().map(|(_, n)| n).sum();
                assert_eq!(kept, rows - 1, "every other row is kept");
                let log2 = (rows as f64).log2().ceil() as usize;
                assert!(
                    runs <= 2 * log2,
                    "{runs} runs for {rows} rows (log2 {log2})"
                );
            }
        }
    }

    #[tokio::test]
    async fn kept_ranges_and_failures_come_out_in_row_order() {
        let (outcome, _) = run_isolation(10, &[2, 3, 8], 10).await;
        let isolated = outcome.unwrap();
        let failed: Vec<usize> = isolated.failed.iter().map(|(row, _)| *row).collect();
        assert_eq!(failed, vec![2, 3, 8]);
        let mut next = 0;
        for (range, _) in &isolated.kept {
            while failed.contains(&next) {
                next += 1;
            }
            assert_eq!(range.start, next, "{:?}", isolated.kept);
            next = range.end;
        }
    }

    #[tokio::test]
    async fn it_gives_up_past_the_tolerated_count() {
        let all: Vec<usize> = (0..100).collect();
        let (outcome, runs) = run_isolation(100, &all, 5).await;
        assert_eq!(outcome.unwrap_err(), TooManyFailed { failed: 6 });
        assert!(runs < 30, "{runs} runs before giving up");
    }
}
