//! The native engine's KV cache: a fixed number of cells, each holding one position's keys
//! and values for every layer, owned by a set of sequences.
//!
//! A prompt evaluated once in sequence 0 and forked with [`KvCache::copy_sequence`] to
//! sequences 1..N adds those sequences to the prompt's cells; nothing is copied. A row that
//! belongs to several sequences at once takes one cell for all of them. Removing a sequence
//! (or a range of its positions) takes it out of its cells, and a cell no sequence owns any
//! more is free again. The capacity is fixed when the cache is created: a batch that needs
//! more free cells than there are is refused with [`BackendError::CacheFull`] before anything
//! changes.
//!
//! Each sequence keeps a map from position to cell, so attention walks its own positions in
//! order whatever cells they landed in; a row's result therefore does not depend on where its
//! keys are stored.
//!
//! Keys and values are stored as f16, as llama.cpp's default cache stores them (the forward
//! pass rounds them to f16 before they are written, so nothing is lost here), and by key/value
//! head: one head's cells lie one after the other, so a sequence's cells, taken in order as a
//! decoding sequence takes them, are read as one run of memory per head. New cells are placed
//! to keep that true when many sequences decode side by side (see `KvCache::place`): each
//! continues in the cell after its last one, and a sequence that cannot (samples forked from
//! one prompt all continue from its last cell) starts a run in the middle of the longest free
//! run. Where a cell lies never changes a result.

use half::f16;

use crate::backend::{BackendError, Batch, Pos, SeqId};

/// Marks a position a sequence does not hold.
const NONE: u32 = u32::MAX;

/// Cells with keys and values, owned by sets of sequences.
pub struct KvCache {
    n_cells: usize,
    n_layer: usize,
    /// Key/value heads and their width.
    n_head_kv: usize,
    head_dim: usize,
    /// Bit words per cell for its owner set.
    words: usize,
    /// Owners of each cell: `words` u64 per cell.
    owners: Vec<u64>,
    /// How many sequences own each cell.
    refs: Vec<u32>,
    /// How many cells no sequence owns.
    n_free: usize,
    /// Per sequence: position → cell (`NONE` where it holds nothing).
    maps: Vec<Vec<u32>>,
    /// Per layer and key/value head: `n_cells × head_dim` keys (and values), so that one
    /// head's cells lie one after the other.
    k: Vec<Vec<f16>>,
    v: Vec<Vec<f16>>,
}

impl KvCache {
    /// A cache of `n_cells` cells for `max_sequences` sequences. The key and value arrays are
    /// reserved zeroed at once (pages are only touched as cells fill).
    pub fn new(
        n_cells: usize,
        max_sequences: usize,
        n_layer: usize,
        n_head_kv: usize,
        head_dim: usize,
    ) -> Self {
        let words = max_sequences.div_ceil(64);
        let kv_dim = n_head_kv * head_dim;
        KvCache {
            n_cells,
            n_layer,
            n_head_kv,
            head_dim,
            words,
            owners: vec![0; n_cells * words],
            refs: vec![0; n_cells],
            n_free: n_cells,
            maps: vec![Vec::new(); max_sequences],
            k: (0..n_layer)
                .map(|_| vec![f16::ZERO; n_cells * kv_dim])
                .collect(),
            v: (0..n_layer)
                .map(|_| vec![f16::ZERO; n_cells * kv_dim])
                .collect(),
        }
    }

    /// Cells in use.
    pub fn used(&self) -> usize {
        self.n_cells - self.n_free
    }

    /// Total cells.
    pub fn capacity(&self) -> usize {
        self.n_cells
    }

    /// Bytes held by keys and values.
    pub fn bytes(&self) -> usize {
        2 * self.n_layer * self.n_cells * self.kv_dim() * std::mem::size_of::<f16>()
    }

    fn owns(&self, cell: u32, seq: SeqId) -> bool {
        let w = cell as usize * self.words + seq as usize / 64;
        self.owners[w] >> (seq % 64) & 1 == 1
    }

    fn set_owner(&mut self, cell: u32, seq: SeqId, on: bool) {
        let w = cell as usize * self.words + seq as usize / 64;
        let bit = 1u64 << (seq % 64);
        let had = self.owns(cell, seq);
        if on && !had {
            self.owners[w] |= bit;
            if self.refs[cell as usize] == 0 {
                self.n_free -= 1;
            }
            self.refs[cell as usize] += 1;
        } else if !on && had {
            self.owners[w] &= !bit;
            self.refs[cell as usize] -= 1;
            if self.refs[cell as usize] == 0 {
                self.n_free += 1;
            }
        }
    }

    /// The cell holding `seq`'s position `pos`.
    pub fn cell(&self, seq: SeqId, pos: Pos) -> Option<u32> {
        self.maps[seq as usize]
            .get(pos as usize)
            .copied()
            .filter(|&c| c != NONE)
    }

    /// `seq`'s cells for positions `0..=pos` in order (`None` for positions it lacks).
    pub fn cells_up_to(&self, seq: SeqId, pos: Pos) -> impl Iterator<Item = Option<u32>> + '_ {
        self.cells_between(seq, 0, pos)
    }

    /// `seq`'s cells for positions `from..=pos` in order (`None` for positions it lacks).
    pub fn cells_between(
        &self,
        seq: SeqId,
        from: Pos,
        pos: Pos,
    ) -> impl Iterator<Item = Option<u32>> + '_ {
        let map = &self.maps[seq as usize];
        (from as usize..=pos as usize).map(move |t| map.get(t).copied().filter(|&c| c != NONE))
    }

    /// Takes a cell for every row of `batch` (rows already checked against the model), owned
    /// by all of the row's sequences; a position a sequence already holds is replaced. Fails
    /// without changing anything when the free cells do not suffice.
    pub fn assign(&mut self, batch: &Batch) -> Result<Vec<u32>, BackendError> {
        // Cells freed by replacement are not counted: the check is conservative.
        if batch.len() > self.n_free {
            return Err(BackendError::CacheFull {
                n_ctx: self.n_cells as u32,
            });
        }
        let mut cells = Vec::with_capacity(batch.len());
        let mut runs = None;
        for row in batch.rows() {
            let cell = self.place(row.seqs[0], row.pos, &mut runs);
            for &s in row.seqs {
                if let Some(old) = self.cell(s, row.pos) {
                    self.set_owner(old, s, false);
                }
                let map = &mut self.maps[s as usize];
                if map.len() <= row.pos as usize {
                    map.resize(row.pos as usize + 1, NONE);
                }
                map[row.pos as usize] = cell;
                self.set_owner(cell, s, true);
            }
            cells.push(cell);
        }
        Ok(cells)
    }

    /// A free cell for `seq`'s position `pos` (there is one: the caller checked), placed so
    /// that each sequence's cells lie one after another in runs: the cell after its previous
    /// position's if that one is free; for a sequence's first position the start of the
    /// longest free run; otherwise (its next cell taken, as when many sequences forked from
    /// one prompt all continue from the prompt's last cell) the middle of the longest free
    /// run, which leaves room to grow both to whoever precedes that run and to this sequence.
    /// Many sequences decoding side by side then each read their own cells as runs of memory
    /// rather than one cell in every `n`, which the caches' prefetchers follow.
    ///
    /// `runs` holds the free runs `(start, len)` of this batch's assignment, listed on first
    /// need (one pass over the cells) and kept up to date as cells are taken.
    fn place(&self, seq: SeqId, pos: Pos, runs: &mut Option<Vec<(usize, usize)>>) -> u32 {
        let prev = pos.checked_sub(1).and_then(|p| self.cell(seq, p));
        let cell = match prev.map(|c| c as usize + 1) {
            Some(next) if next < self.n_cells && self.refs[next] == 0 => next,
            _ => {
                let runs = runs.get_or_insert_with(|| self.free_runs());
                // One of the longest runs; a run's cells are all free.
                let (start, len) = runs
                    .iter()
                    .copied()
                    .fold((0, 0), |b, r| if r.1 > b.1 { r } else { b });
                debug_assert!(len > 0, "no free cell");
                match prev {
                    None => start,
                    Some(_) => start + len / 2,
                }
            }
        };
        if let Some(runs) = runs {
            // Take the cell out of its run.
            if let Some(k) = runs.iter().position(|&(s, l)| s <= cell && cell < s + l) {
                let (s, l) = runs.swap_remove(k);
                runs.extend(
                    [(s, cell - s), (cell + 1, s + l - cell - 1)]
                        .into_iter()
                        .filter(|r| r.1 > 0),
                );
            }
        }
        cell as u32
    }

    /// The runs of free cells, `(start, len)`.
    fn free_runs(&self) -> Vec<(usize, usize)> {
        let mut runs = Vec::new();
        let mut start = None;
        for (i, &r) in self.refs.iter().enumerate() {
            match (r == 0, start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    runs.push((s, i - s));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            runs.push((s, self.n_cells - s));
        }
        runs
    }

    /// Writes one cell's keys and values for `layer` (`kv_dim` each, heads one after the
    /// other), as f16.
    pub fn write(&mut self, layer: usize, cell: u32, k: &[f32], v: &[f32]) {
        let hd = self.head_dim;
        for (h, (kh, vh)) in k.chunks_exact(hd).zip(v.chunks_exact(hd)).enumerate() {
            let at = (h * self.n_cells + cell as usize) * hd;
            for (dst, src) in [(&mut self.k[layer], kh), (&mut self.v[layer], vh)] {
                for (d, &x) in dst[at..at + hd].iter_mut().zip(src) {
                    *d = f16::from_f32(x);
                }
            }
        }
    }

    /// Values per cell and layer (keys or values), all heads.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// Every cell's keys for `layer` and key/value head `head`, cell after cell
    /// (`head_dim` values each).
    pub fn keys(&self, layer: usize, head: usize) -> &[f16] {
        let n = self.n_cells * self.head_dim;
        &self.k[layer][head * n..(head + 1) * n]
    }

    /// Every cell's values for `layer` and key/value head `head`, cell after cell.
    pub fn values(&self, layer: usize, head: usize) -> &[f16] {
        let n = self.n_cells * self.head_dim;
        &self.v[layer][head * n..(head + 1) * n]
    }

    /// Removes `seq` from its cells at positions `from..to` (`to = None`: to the end).
    pub fn remove(&mut self, seq: SeqId, from: Pos, to: Option<Pos>) {
        let len = self.maps[seq as usize].len();
        let end = to.map_or(len, |t| (t as usize).min(len));
        for p in (from as usize)..end {
            let c = self.maps[seq as usize][p];
            if c != NONE {
                self.maps[seq as usize][p] = NONE;
                self.set_owner(c, seq, false);
            }
        }
        let map = &mut self.maps[seq as usize];
        while map.last() == Some(&NONE) {
            map.pop();
        }
    }

    /// Makes `dst` own exactly `src`'s cells (what `dst` held before is released).
    pub fn copy_sequence(&mut self, src: SeqId, dst: SeqId) {
        if src == dst {
            return;
        }
        self.remove(dst, 0, None);
        let map = self.maps[src as usize].clone();
        for &c in &map {
            if c != NONE {
                self.set_owner(c, dst, true);
            }
        }
        self.maps[dst as usize] = map;
    }

    /// Frees every cell.
    pub fn clear(&mut self) {
        self.owners.fill(0);
        self.refs.fill(0);
        self.n_free = self.n_cells;
        for m in &mut self.maps {
            m.clear();
        }
    }

    /// Checks the bookkeeping: reference counts match owner bits and maps, the free count is
    /// the number of unowned cells.
    #[cfg(test)]
    fn check(&self) {
        let mut refs = vec![0u32; self.n_cells];
        for (s, map) in self.maps.iter().enumerate() {
            for &c in map.iter().filter(|&&c| c != NONE) {
                assert!(
                    self.owns(c, s as SeqId),
                    "seq {s} maps to cell {c} it does not own"
                );
                refs[c as usize] += 1;
            }
        }
        assert_eq!(refs, self.refs);
        let unowned = self.refs.iter().filter(|&&r| r == 0).count();
        assert_eq!(self.n_free, unowned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(cache: &mut KvCache, seq: SeqId, n: u32) -> Vec<u32> {
        let mut b = Batch::new();
        for p in 0..n {
            b.add(0, p, &[seq], false);
        }
        cache.assign(&b).unwrap()
    }

    /// Sequences forked from one prompt and decoding side by side each take their cells in
    /// runs, one after another, and every cell of a cache just large enough is used.
    #[test]
    fn side_by_side_sequences_take_runs_of_cells() {
        let (seqs, steps, prompt_len) = (64u32, 8u32, 20u32);
        let mut c = KvCache::new((prompt_len + seqs * steps) as usize, 64, 1, 1, 2);
        prompt(&mut c, 0, prompt_len);
        for s in 1..seqs {
            c.copy_sequence(0, s);
        }
        for t in 0..steps {
            let mut b = Batch::new();
            for s in 0..seqs {
                b.add(0, prompt_len + t, &[s], true);
            }
            c.assign(&b).unwrap();
            c.check();
        }
        assert_eq!(c.used(), c.capacity());
        // Count each sequence's own cells that follow its previous one.
        let mut adjacent = 0;
        for s in 0..seqs {
            for t in 1..steps {
                let (a, b) = (c.cell(s, prompt_len + t - 1), c.cell(s, prompt_len + t));
                adjacent += usize::from(b == a.map(|a| a + 1));
            }
        }
        let total = (seqs * (steps - 1)) as usize;
        assert!(
            adjacent * 10 >= total * 9,
            "{adjacent} of {total} cells follow their previous"
        );
    }

    #[test]
    fn forked_prompts_share_cells_and_free_them_last() {
        let mut c = KvCache::new(16, 70, 2, 2, 2);
        let cells = prompt(&mut c, 0, 5);
        c.write(1, cells[4], &[1.0; 4], &[2.0; 4]);
        for s in [1, 2, 65] {
            c.copy_sequence(0, s);
        }
        c.check();
        // Four sequences, five cells.
        assert_eq!(c.used(), 5);
        assert_eq!(c.cell(65, 4), Some(cells[4]));
        let at = c.cell(2, 4).unwrap() as usize * 2;
        assert_eq!(&c.keys(1, 1)[at..at + 2], &[f16::ONE; 2]);
        assert_eq!(&c.values(1, 0)[at..at + 2], &[f16::from_f32(2.0); 2]);
        // Each continues on its own cells.
        let mut b = Batch::new();
        for s in [0, 1, 2, 65] {
            b.add(0, 5, &[s], true);
        }
        let new = c.assign(&b).unwrap();
        assert_eq!(c.used(), 9);
        assert_ne!(c.cell(1, 5), c.cell(2, 5));
        assert_eq!(c.cell(1, 5), Some(new[1]));
        // Dropping samples frees their own cells; the prompt stays while anyone holds it.
        for s in [1, 2, 65] {
            c.remove(s, 0, None);
        }
        c.check();
        assert_eq!(c.used(), 6);
        c.remove(0, 0, None);
        assert_eq!(c.used(), 0);
        c.check();
    }

    #[test]
    fn a_full_cache_is_an_error_that_changes_nothing() {
        let mut c = KvCache::new(4, 2, 1, 1, 2);
        prompt(&mut c, 0, 3);
        let mut b = Batch::new();
        b.add(0, 3, &[0], true).add(0, 0, &[1], true);
        assert!(matches!(
            c.assign(&b),
            Err(BackendError::CacheFull { n_ctx: 4 })
        ));
        c.check();
        assert_eq!(c.used(), 3);
        assert_eq!(c.cell(1, 0), None);
        // Removing a range frees room.
        c.remove(0, 1, Some(3));
        assert_eq!(c.used(), 1);
        c.assign(&b).unwrap();
        c.check();
        assert_eq!(c.used(), 3);
    }

    #[test]
    fn rows_in_several_sequences_take_one_cell_and_replacing_releases() {
        let mut c = KvCache::new(8, 3, 1, 1, 1);
        let mut b = Batch::new();
        b.add(0, 0, &[0, 1, 2], false);
        let cells = c.assign(&b).unwrap();
        assert_eq!(c.used(), 1);
        assert!((0..3).all(|s| c.cell(s, 0) == Some(cells[0])));
        // Sequence 1 rewrites position 0: it leaves the shared cell for a new one.
        let mut b = Batch::new();
        b.add(0, 0, &[1], false);
        c.assign(&b).unwrap();
        c.check();
        assert_eq!(c.used(), 2);
        assert_ne!(c.cell(1, 0), c.cell(0, 0));
        let seen: Vec<Option<u32>> = c.cells_up_to(2, 2).collect();
        assert_eq!(seen, vec![Some(cells[0]), None, None]);
        c.copy_sequence(1, 2);
        assert_eq!(c.cell(2, 0), c.cell(1, 0));
        c.check();
        c.clear();
        assert_eq!(c.used(), 0);
        c.check();
    }
}
