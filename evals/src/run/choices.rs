//! Multiple-choice problems in a run: scored, not sampled. Each problem's prompt is evaluated
//! once; each choice is then teacher-forced after it on a fork of the prompt's cells, giving
//! its log-likelihood (the sum of its tokens' log-probabilities) and whether greedy decoding
//! would produce it. One line per problem goes to `DIR/choices.jsonl`, appended and flushed
//! as the problem is scored, so a killed run keeps what it scored and a resumed one scores
//! only the rest.
//!
//! Tokenization follows lm-eval: `prompt + choice` is tokenized whole and the choice is what
//! follows the prompt's own tokens (a merge across the boundary goes to the choice); where the
//! prompt's tokens are not a prefix of the whole's, the two are tokenized apart. Chat prompts
//! are rendered with the model's template and the choice tokenized apart. Prompts are
//! tokenized as the sampled problems' are (BOS as the model wants, special-token text kept as
//! text).

use std::path::Path;

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::{Exec, Progress, PromptError, RunConfig, RunError};
use crate::generate::BackendKind;
use crate::tasks::{Check, Problem, Prompt};
use engine::backend::{
    BackendError, Batch, Context, ContextOptions, Logits, Model, Token, TokenizeOptions,
};

/// One multiple-choice problem scored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChoiceRecord {
    /// The problem's id.
    pub problem: String,
    /// Its index in the task file.
    pub p: u64,
    /// The choices, as continuations of the prompt.
    pub choices: Vec<String>,
    /// Each choice's score from the task (1 correct, 0 wrong; BIG-bench allows fractions).
    pub scores: Vec<f64>,
    /// Each choice's log-likelihood after the prompt.
    pub loglikelihoods: Vec<f64>,
    /// Each choice's length in tokens.
    pub tokens: Vec<usize>,
    /// Whether greedy decoding after the prompt produces each choice.
    pub greedy: Vec<bool>,
    /// Which session (0 for the first, +1 per resume) scored it.
    pub session: u32,
}

impl ChoiceRecord {
    /// Whether choice `j` is a correct answer: it has the highest score of the problem, and
    /// that score is positive.
    pub fn correct(&self, j: usize) -> bool {
        let top = self
            .scores
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        top > 0.0 && self.scores.get(j) == Some(&top)
    }

    /// The first correct choice (the highest score), for the Brier score's one-hot target.
    pub fn gold(&self) -> usize {
        crate::metrics::calibration::argmax_first(&self.scores).unwrap_or(0)
    }
}

/// `DIR/choices.jsonl` read back: the records in file order, and the length of the file up to
/// its last complete line (a torn last line, from a kill in the middle of a write, is
/// dropped). A missing file is an empty one; anything else malformed is an error naming its
/// line.
pub fn load_choices(path: &Path) -> Result<(Vec<ChoiceRecord>, u64), RunError> {
    let mut seen = std::collections::HashSet::new();
    let (records, _, good_len) = super::record::read_jsonl(path, |r: &ChoiceRecord| {
        let n = r.choices.len();
        if n == 0
            || [
                r.scores.len(),
                r.loglikelihoods.len(),
                r.tokens.len(),
                r.greedy.len(),
            ]
            .iter()
            .any(|&m| m != n)
        {
            return Err(format!(
                "problem '{}': choices, scores, log-likelihoods, token counts and greedy flags \
                 must be as many, and at least one",
                r.problem
            ));
        }
        if r.loglikelihoods.iter().any(|v| v.is_nan() || *v > 0.0) {
            return Err(format!(
                "problem '{}': a log-likelihood that is not a log-probability",
                r.problem
            ));
        }
        match seen.insert(r.p) {
            true => Ok(()),
            false => Err(format!("problem '{}' appears twice", r.problem)),
        }
    })?;
    Ok((records, good_len))
}

/// Appends records to `choices.jsonl` or `references.jsonl` as the samples file's writer
/// does, each synced as it is written (problems are few, and each costs a forward pass).
pub(crate) type ChoiceWriter = super::SampleWriter;

/// A multiple-choice problem tokenized: the prompt's tokens and each choice's.
pub(crate) struct Tokenized {
    /// The prompt.
    pub(crate) context: Vec<Token>,
    /// Each choice, as it follows the prompt.
    pub(crate) choices: Vec<Vec<Token>>,
}

/// How run prompts are tokenized.
const PROMPT: TokenizeOptions = TokenizeOptions {
    add_special: true,
    parse_special: false,
};

/// Tokenizes a multiple-choice problem as described in the module docs.
pub(crate) fn tokenize(
    model: &dyn Model,
    problem: &Problem,
    choices: &[String],
    chat: bool,
) -> Result<Tokenized, RunError> {
    let apart = |choice: &str| {
        model.tokenize(
            choice.as_bytes(),
            TokenizeOptions {
                add_special: false,
                parse_special: false,
            },
        )
    };
    let refuse = |reason| RunError::Prompt {
        problem: problem.id.clone(),
        reason,
    };
    let (context, choices) = match &problem.prompt {
        Prompt::Text(text) if !chat => {
            let context = model.tokenize(text.as_bytes(), PROMPT)?;
            let choices = choices
                .iter()
                .map(|c| {
                    let whole = model.tokenize(format!("{text}{c}").as_bytes(), PROMPT)?;
                    if whole.len() > context.len() && whole.starts_with(&context) {
                        Ok(whole[context.len()..].to_vec())
                    } else {
                        apart(c)
                    }
                })
                .collect::<Result<Vec<_>, BackendError>>()?;
            (context, choices)
        }
        _ => {
            // The reply starts after the template's assistant header: choices are
            // tokenized on their own.
            let context = super::prompt_tokens(model, problem, chat)?;
            let choices = choices
                .iter()
                .map(|c| apart(c))
                .collect::<Result<Vec<_>, BackendError>>()?;
            (context, choices)
        }
    };
    if context.is_empty() {
        return Err(refuse(PromptError::Empty));
    }
    if let Some(j) = choices.iter().position(Vec::is_empty) {
        return Err(refuse(PromptError::EmptyChoice(j)));
    }
    Ok(Tokenized { context, choices })
}

/// Rows of a prompt evaluated per call.
const CHUNK: usize = 512;

/// Each choice's (log-likelihood, greedy) after the context: the context evaluated once as
/// sequence 0 on an emptied cache, each choice on sequence 1, a fork of it, then dropped.
pub(crate) fn score(
    ctx: &mut dyn Context,
    t: &Tokenized,
) -> Result<Vec<(f64, bool)>, BackendError> {
    ctx.clear()?;
    let n_vocab = ctx.info().n_vocab;
    if let Some(&token) = t.choices.iter().flatten().find(|&&t| t as usize >= n_vocab) {
        return Err(BackendError::InvalidToken {
            token,
            what: "a choice".into(),
            n_vocab,
        });
    }
    let mut batch = Batch::new();
    let mut logits = Logits::new(n_vocab);
    for (c, piece) in t.context.chunks(CHUNK).enumerate() {
        batch.clear();
        batch.add_sequence(piece, (c * CHUNK) as u32, 0, false);
        ctx.decode(&batch, &mut logits)?;
    }
    // The last prompt row predicts every choice's first token.
    let first = logits.row(logits.len() - 1).to_vec();
    let first_lse = engine::sampling::log_sum_exp(&first)?;
    let start = t.context.len() as u32;
    let mut out = Vec::with_capacity(t.choices.len());
    for choice in &t.choices {
        let mut ll = first[choice[0] as usize] as f64 - first_lse;
        let mut greedy = argmax(&first) == choice[0] as usize;
        if choice.len() > 1 {
            ctx.copy_sequence(0, 1)?;
            batch.clear();
            batch.add_sequence(&choice[..choice.len() - 1], start, 1, true);
            ctx.decode(&batch, &mut logits)?;
            for (i, &tok) in choice[1..].iter().enumerate() {
                let row = logits.row(i);
                ll += row[tok as usize] as f64 - engine::sampling::log_sum_exp(row)?;
                greedy &= argmax(row) == tok as usize;
            }
            ctx.remove_sequence(1, 0, None)?;
        }
        out.push((ll, greedy));
    }
    Ok(out)
}

/// Index of the largest logit, the first on ties.
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// What one problem has scored: its choices (one, the reference, for a generative problem).
pub(crate) struct Scoring<'a> {
    /// Its index in the task file.
    pub(crate) p: u64,
    /// The problem.
    pub(crate) problem: &'a Problem,
    /// The continuations to score.
    pub(crate) choices: Vec<String>,
    /// Their scores in the task.
    pub(crate) scores: Vec<f64>,
    /// Where its record goes: 0 for `choices.jsonl`, 1 for `references.jsonl`.
    pub(crate) file: usize,
}

impl<'a> Scoring<'a> {
    /// A multiple-choice problem's choices.
    pub(crate) fn choices(p: u64, problem: &'a Problem) -> Option<Self> {
        let Check::MultipleChoice { choices, scores } = &problem.check else {
            return None;
        };
        Some(Scoring {
            p,
            problem,
            choices: choices.clone(),
            scores: scores.clone(),
            file: 0,
        })
    }

    /// A generative problem's reference answer ([`reference_of`]).
    pub(crate) fn reference(p: u64, problem: &'a Problem, chat: bool) -> Option<Self> {
        Some(Scoring {
            p,
            problem,
            choices: vec![reference_of(problem, chat)?],
            scores: vec![1.0],
            file: 1,
        })
    }
}

/// The reference answer of a generative problem as a continuation of its prompt, for the
/// continuous metrics: the first target of an exact, normalized or contains check, or a
/// numeric check's number; `None` for regular expressions and programs, which have none.
/// Like lm-eval's target delimiter, a space goes between a text prompt and a reference when
/// neither has whitespace at the join ("A:" + "7" is scored as "A: 7", as models write it);
/// none when the prompt goes through a chat template (`chat`), where the reply starts fresh.
pub fn reference_of(problem: &Problem, chat: bool) -> Option<String> {
    let answer = match &problem.check {
        Check::Exact { targets }
        | Check::Contains { targets }
        | Check::BigBench { targets, .. } => targets.first()?.clone(),
        Check::Normalized { targets, .. } => targets.first()?.clone(),
        Check::Numeric { target, .. } => format!("{target}"),
        _ => return None,
    };
    if answer.is_empty() {
        return None;
    }
    let joined = match &problem.prompt {
        Prompt::Text(text) => chat || text.ends_with(char::is_whitespace),
        Prompt::Chat(_) => true,
    };
    Some(if joined || answer.starts_with(char::is_whitespace) {
        answer
    } else {
        format!(" {answer}")
    })
}

/// Tokenizes one problem's scoring work and checks that it fits the trained context (unless
/// the run allows more): the prompt's bytes before it is tokenized, then prompt and longest
/// choice.
fn prepare(
    model: &dyn Model,
    exec: &Exec,
    chat: bool,
    w: &Scoring<'_>,
) -> Result<Tokenized, RunError> {
    let n_ctx_train = model.info().n_ctx_train;
    let refuse = |reason| RunError::Prompt {
        problem: w.problem.id.clone(),
        reason,
    };
    if !exec.allow_long_context {
        let bytes = match &w.problem.prompt {
            Prompt::Text(text) => text.len(),
            Prompt::Chat(messages) => messages.iter().map(|m| m.content.len()).sum(),
        } + w.choices.iter().map(String::len).max().unwrap_or(0);
        crate::generate::check_prompt_bytes(bytes, n_ctx_train)
            .map_err(|e| refuse(PromptError::TooManyBytes(e)))?;
    }
    let t = tokenize(model, w.problem, &w.choices, chat)?;
    let longest = t.choices.iter().map(Vec::len).max().unwrap_or(0);
    if !exec.allow_long_context && t.context.len() + longest > n_ctx_train as usize {
        return Err(refuse(PromptError::ChoiceTooLong {
            prompt: t.context.len(),
            choice: longest,
            n_ctx_train: n_ctx_train as usize,
        }));
    }
    Ok(t)
}

/// Scores `work` on `model`, appending a record per problem to `writers[file]` as it is
/// scored. `session` is the session's number. A multiple-choice problem that cannot be
/// scored stops the run, as a sampled prompt that cannot be sampled does; a reference answer
/// that cannot be (too long, tokenizing to nothing, a log-likelihood of −∞) is left out, and
/// returned as `(problem, why)`: the continuous metrics are a by-product of the run.
pub(crate) fn score_all(
    model: Arc<dyn Model>,
    config: &RunConfig,
    exec: &Exec,
    work: &[Scoring<'_>],
    writers: &mut [ChoiceWriter; 2],
    session: u32,
    progress: &mut dyn Progress,
) -> Result<Vec<(String, String)>, RunError> {
    let mut skipped = Vec::new();
    let mut ready = Vec::with_capacity(work.len());
    for w in work {
        match prepare(&*model, exec, config.chat, w) {
            Ok(t) => ready.push((w, t)),
            Err(e) if w.file == 1 => skipped.push((w.problem.id.clone(), e.to_string())),
            Err(e) => return Err(e),
        }
    }
    if ready.is_empty() {
        return Ok(skipped);
    }
    let tokenized: Vec<&Tokenized> = ready.iter().map(|(_, t)| t).collect();
    let cells = tokenized
        .iter()
        .map(|t| t.context.len() + t.choices.iter().map(Vec::len).max().unwrap_or(0))
        .max()
        .unwrap_or(1);
    let options = match config.backend {
        // The native cache shares the prompt's cells with the fork.
        BackendKind::Native => ContextOptions::new(cells as u32 + 16, 2),
        // A stream of cells per sequence (see `open_context`).
        BackendKind::LlamaCpp => {
            let per_seq = (cells + 1).next_multiple_of(256);
            ContextOptions {
                unified_kv: false,
                ..ContextOptions::new((per_seq * 2) as u32, 2)
            }
        }
    };
    let mut ctx = model.context(&ContextOptions {
        threads: exec.threads,
        activations: config.activations,
        ..options
    })?;
    let mc = ready.iter().filter(|(w, _)| w.file == 0).count();
    progress.note(&format!(
        "scoring {mc} multiple-choice problems and {} reference answers (teacher-forced after \
         the prompt)",
        ready.len() - mc
    ));
    for (w, t) in &ready {
        let scored = score(&mut *ctx, t)?;
        if let Some(j) = scored.iter().position(|s| !s.0.is_finite()) {
            let why = format!("choice {j} has a log-likelihood of {}", scored[j].0);
            if w.file == 1 {
                skipped.push((w.problem.id.clone(), why));
                continue;
            }
            return Err(RunError::Prompt {
                problem: w.problem.id.clone(),
                reason: PromptError::Unscorable(why),
            });
        }
        let writer = &mut writers[w.file];
        writer.append(&ChoiceRecord {
            problem: w.problem.id.clone(),
            p: w.p,
            choices: w.choices.clone(),
            scores: w.scores.clone(),
            loglikelihoods: scored.iter().map(|s| s.0).collect(),
            tokens: t.choices.iter().map(Vec::len).collect(),
            greedy: scored.iter().map(|s| s.1).collect(),
            session,
        })?;
        writer.sync()?;
    }
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(prompt: &str, check: Check) -> Problem {
        Problem {
            id: "x".into(),
            prompt: Prompt::Text(prompt.into()),
            check,
            stop: Vec::new(),
        }
    }

    #[test]
    fn references_follow_the_prompt_as_models_write_them() {
        let exact = |t: &str| Check::Exact {
            targets: vec![t.into(), "other".into()],
        };
        assert_eq!(
            reference_of(&problem("A:", exact("7")), false).as_deref(),
            Some(" 7")
        );
        assert_eq!(
            reference_of(&problem("A: ", exact("7")), false).as_deref(),
            Some("7")
        );
        assert_eq!(
            reference_of(&problem("A:", exact(" 7")), false).as_deref(),
            Some(" 7")
        );
        assert_eq!(reference_of(&problem("A:", exact("")), false), None);
        let numeric = Check::Numeric {
            target: 4.0,
            abs_tol: 0.0,
            rel_tol: 0.0,
        };
        assert_eq!(
            reference_of(&problem("A:", numeric), false).as_deref(),
            Some(" 4")
        );
        let regex = Check::Regex {
            pattern: crate::tasks::Pattern::new("7").unwrap(),
        };
        assert_eq!(reference_of(&problem("A:", regex), false), None);
        // Through a chat template the reply starts fresh: no delimiter.
        assert_eq!(
            reference_of(&problem("A:", exact("7")), true).as_deref(),
            Some("7")
        );
    }
}
