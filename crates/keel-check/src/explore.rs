//! The model-independent part: breadth-first exploration with state fingerprints, safety on
//! every state, and liveness as the search for fair "end components" that avoid the goal.
//!
//! Liveness, precisely. Each step is an action chosen by an adversarial scheduler followed by
//! the random choices the core makes (election timeouts). Random choices are treated as
//! probabilistic, not adversarial: a property "~P ~> P" fails only if there is a set of
//! reachable states where P never holds, from which the scheduler can keep the run forever
//! whatever the random choices say (an end component of the Markov decision process), and
//! which is fair: every fair action (message delivery, time passing) that is enabled in every
//! state of the set is taken inside it. Faults and client actions are not fair actions, so
//! they do not appear in the liveness graph: after the last fault the system must recover on
//! fair steps alone. A model may instead hand an action's random choices to the scheduler
//! ([`Model::scheduler_chooses`]): then each outcome is a separate edge the scheduler may pick,
//! and the property must hold whatever it picks. Steps that leave the bounds (too many terms,
//! too many messages in flight) are cut off, and a cut-off step counts as leaving the
//! component, so liveness is judged on behaviours within the bounds.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};

use keel_types::Entropy;

/// A model of a protocol: states, the actions possible in each, and what must hold.
pub trait Model {
    type State: Clone + Eq + Hash + std::fmt::Debug;
    type Action: Clone + std::fmt::Debug;
    /// Identifies a fair action across states (the same message delivered, time passing).
    type FairKey: Clone + Ord + std::fmt::Debug;

    fn initial(&self) -> Self::State;
    /// Every action possible in `state`, in a fixed order.
    fn actions(&self, state: &Self::State) -> Vec<Self::Action>;
    /// The state after `action`, with the core's random choices drawn from `choices`;
    /// `None` if the result lies outside the model's bounds.
    fn step(&self, state: &Self::State, action: &Self::Action, choices: &mut Choices) -> Option<Self::State>;
    /// `Some` for actions that are fair and belong to the healed system (used for liveness).
    fn fair_key(&self, state: &Self::State, action: &Self::Action) -> Option<Self::FairKey>;
    /// True if the random choices `action` makes are the adversary's, not chance: for liveness,
    /// the scheduler then picks the outcome (taking any of them counts as taking the action).
    fn scheduler_chooses(&self, _action: &Self::Action) -> bool {
        false
    }
    /// Safety: every invariant of one state.
    fn check(&self, state: &Self::State) -> Result<(), String>;
    /// Liveness goals, each checked as "~goal ~> goal".
    fn properties(&self) -> Vec<Property<Self::State>>;
    fn describe_action(&self, state: &Self::State, action: &Self::Action) -> String;
    /// What changed from `before` to `after`, for traces (or the whole state if `before` is None).
    fn describe_state(&self, before: Option<&Self::State>, after: &Self::State) -> Vec<String>;
}

pub struct Property<S> {
    pub name: &'static str,
    pub goal: fn(&S) -> bool,
}

impl<S> std::fmt::Debug for Property<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Property").field("name", &self.name).finish()
    }
}

/// Random choices made nondeterministic: a script of answers, every unscripted answer 0. The
/// explorer runs a step once per combination of answers (an odometer over the bounds seen).
#[derive(Debug, Default)]
pub struct Choices {
    script: Vec<u64>,
    answers: Vec<u64>,
    bounds: Vec<u64>,
}

impl Entropy for Choices {
    fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "Entropy::below needs a positive bound");
        let position = self.answers.len();
        let answer = self.script.get(position).copied().unwrap_or(0).min(bound - 1);
        self.answers.push(answer);
        self.bounds.push(bound);
        answer
    }

    /// One answer, not 2^64 branches: the Raft model replaces at most one disk of a node that
    /// never probed before, so no answer to an earlier life's probe exists to tell apart.
    fn nonce(&mut self) -> u64 {
        0
    }
}

impl Choices {
    fn scripted(script: Vec<u64>) -> Choices {
        Choices { script, answers: Vec::new(), bounds: Vec::new() }
    }

    /// The next script in odometer order, or `None` when every combination was run.
    fn next_script(&self) -> Option<Vec<u64>> {
        let mut i = self.answers.len();
        while i > 0 {
            i -= 1;
            if self.answers[i] + 1 < self.bounds[i] {
                let mut next = self.answers[..i].to_vec();
                next.push(self.answers[i] + 1);
                return Some(next);
            }
        }
        None
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Stop (verdict unknown) after this many distinct states.
    pub max_states: usize,
    /// Most random outcomes one step may have.
    pub max_outcomes: usize,
    pub check_liveness: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_states: 20_000_000, max_outcomes: 4096, check_liveness: true }
    }
}

/// One step of a counterexample.
#[derive(Debug, Clone)]
pub struct TraceStep {
    pub action: String,
    pub changes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Trace {
    pub initial: Vec<String>,
    pub steps: Vec<TraceStep>,
    /// For a liveness violation: steps from this index on repeat forever.
    pub cycle_from: Option<usize>,
}

impl std::fmt::Display for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "initial state:")?;
        for line in &self.initial {
            writeln!(f, "    {line}")?;
        }
        for (i, step) in self.steps.iter().enumerate() {
            if self.cycle_from == Some(i) {
                writeln!(f, "--- from here the run repeats forever (a fair cycle that never reaches the goal) ---")?;
            }
            writeln!(f, "{:>3}. {}", i + 1, step.action)?;
            for line in &step.changes {
                writeln!(f, "       {line}")?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub enum Verdict {
    Holds,
    Violated {
        message: String,
        trace: Trace,
    },
    /// Exploration stopped at a limit before a verdict.
    Unknown(String),
}

impl Verdict {
    pub fn holds(&self) -> bool {
        matches!(self, Verdict::Holds)
    }
}

#[derive(Debug)]
pub struct Report {
    pub states: usize,
    pub transitions: usize,
    /// States whose successors left the bounds at least once.
    pub cut_off: usize,
    pub depth: usize,
    pub safety: Verdict,
    pub liveness: Vec<(&'static str, Verdict)>,
}

const NONE: u32 = u32::MAX;

struct Meta {
    parent: u32,
    action: u32,
    outcome: u32,
    depth: u32,
}

/// A fair action of one state: which fair action it is, its number among the state's actions,
/// and its outcomes (NONE marks a cut-off outcome), numbered from `first_outcome` (an action
/// whose outcome the scheduler chooses has an edge per outcome).
struct FairEdge {
    key: u32,
    action: u32,
    first_outcome: u32,
    outcomes: Vec<u32>,
}

type FairEdges = Vec<FairEdge>;

pub(crate) fn fingerprint<T: Hash + ?Sized>(value: &T) -> u128 {
    // SipHash with fixed keys: deterministic from run to run. Two salted hashes make a 128-bit
    // fingerprint, so a collision (which would hide states) is vanishingly unlikely.
    #[allow(deprecated)]
    let mut a = std::hash::SipHasher::new_with_keys(0x6b65_656c, 0x0063_6865_636b);
    #[allow(deprecated)]
    let mut b = std::hash::SipHasher::new_with_keys(0x1234_5678_9abc_def0, 0x0fed_cba9_8765_4321);
    value.hash(&mut a);
    value.hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// Runs `step` once per combination of random answers. Returns distinct outcomes in a fixed
/// order (`None` for out of bounds), or the panic message if the core panicked.
fn outcomes<M: Model>(
    model: &M,
    state: &M::State,
    action: &M::Action,
    limits: &Limits,
) -> Result<Vec<Option<M::State>>, String> {
    let mut results: Vec<Option<M::State>> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut script = Some(Vec::new());
    while let Some(s) = script {
        let mut choices = Choices::scripted(s);
        let result = catch_unwind(AssertUnwindSafe(|| model.step(state, action, &mut choices)))
            .map_err(|panic| panic_message(&*panic))?;
        let key = result.as_ref().map(fingerprint);
        if seen.insert(key) {
            results.push(result);
        }
        assert!(results.len() <= limits.max_outcomes, "a step has more than {} random outcomes", limits.max_outcomes);
        script = choices.next_script();
    }
    Ok(results)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("the core panicked: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("the core panicked: {s}")
    } else {
        "the core panicked".to_string()
    }
}

/// Explores every reachable state of `model` breadth first and judges every property.
pub fn explore<M: Model>(model: &M, limits: Limits) -> Report {
    let properties = model.properties();
    let initial = model.initial();
    // Lookups only, never iterated, so the hasher's order cannot leak into results.
    #[allow(clippy::disallowed_types)]
    let mut index: std::collections::HashMap<u128, u32> = std::collections::HashMap::new();
    let mut meta: Vec<Meta> = Vec::new();
    let mut goals: Vec<u64> = Vec::new();
    let mut enabled: Vec<Vec<u32>> = Vec::new();
    let mut fair_edges: Vec<FairEdges> = Vec::new();
    let mut keys: BTreeMap<M::FairKey, u32> = BTreeMap::new();
    let mut queue: VecDeque<(u32, M::State)> = VecDeque::new();
    let mut transitions = 0usize;
    let mut cut_off = 0usize;
    let mut depth = 0usize;

    let goal_bits = |state: &M::State| -> u64 {
        properties.iter().enumerate().fold(0u64, |bits, (i, p)| if (p.goal)(state) { bits | 1 << i } else { bits })
    };

    let trace_to = |meta: &Vec<Meta>, target: u32, extra: Option<(u32, u32)>| -> Trace {
        let mut path = path_to(meta, target);
        if let Some(last) = extra {
            path.push(last);
        }
        replay(model, &initial, &path, limits)
    };

    if let Err(message) = model.check(&initial) {
        let trace = replay(model, &initial, &[], limits);
        return Report {
            states: 1,
            transitions: 0,
            cut_off: 0,
            depth: 0,
            safety: Verdict::Violated { message, trace },
            liveness: Vec::new(),
        };
    }
    index.insert(fingerprint(&initial), 0);
    meta.push(Meta { parent: NONE, action: 0, outcome: 0, depth: 0 });
    goals.push(goal_bits(&initial));
    enabled.push(Vec::new());
    fair_edges.push(Vec::new());
    queue.push_back((0, initial.clone()));

    while let Some((id, state)) = queue.pop_front() {
        depth = depth.max(meta[id as usize].depth as usize);
        let actions = model.actions(&state);
        let mut state_enabled = Vec::new();
        let mut state_edges = Vec::new();
        let mut was_cut = false;
        for (action_number, action) in actions.iter().enumerate() {
            let key = if limits.check_liveness { model.fair_key(&state, action) } else { None };
            let key_id = key.map(|k| {
                let next = keys.len() as u32;
                *keys.entry(k).or_insert(next)
            });
            let results = match outcomes(model, &state, action, &limits) {
                Ok(results) => results,
                Err(message) => {
                    let trace = trace_to(&meta, id, Some((action_number as u32, 0)));
                    return violated_safety(message, trace, meta.len(), transitions, cut_off, depth);
                }
            };
            let mut successors = Vec::new();
            for (outcome_number, result) in results.into_iter().enumerate() {
                transitions += 1;
                let Some(next) = result else {
                    was_cut = true;
                    successors.push(NONE);
                    continue;
                };
                let print = fingerprint(&next);
                let next_id = match index.get(&print) {
                    Some(existing) => *existing,
                    None => {
                        let next_id = meta.len() as u32;
                        index.insert(print, next_id);
                        meta.push(Meta {
                            parent: id,
                            action: action_number as u32,
                            outcome: outcome_number as u32,
                            depth: meta[id as usize].depth + 1,
                        });
                        if let Err(message) = model.check(&next) {
                            let trace = trace_to(&meta, next_id, None);
                            return violated_safety(message, trace, meta.len(), transitions, cut_off, depth + 1);
                        }
                        goals.push(goal_bits(&next));
                        enabled.push(Vec::new());
                        fair_edges.push(Vec::new());
                        if meta.len() >= limits.max_states {
                            return Report {
                                states: meta.len(),
                                transitions,
                                cut_off,
                                depth,
                                safety: Verdict::Unknown(format!(
                                    "stopped at the limit of {} states",
                                    limits.max_states
                                )),
                                liveness: Vec::new(),
                            };
                        }
                        queue.push_back((next_id, next));
                        next_id
                    }
                };
                successors.push(next_id);
            }
            if let Some(key_id) = key_id {
                state_enabled.push(key_id);
                let scheduler_chooses = model.scheduler_chooses(action);
                let action = action_number as u32;
                if scheduler_chooses {
                    for (outcome, next) in successors.into_iter().enumerate() {
                        let first_outcome = outcome as u32;
                        state_edges.push(FairEdge { key: key_id, action, first_outcome, outcomes: vec![next] });
                    }
                } else {
                    state_edges.push(FairEdge { key: key_id, action, first_outcome: 0, outcomes: successors });
                }
            }
        }
        if was_cut {
            cut_off += 1;
        }
        state_enabled.sort_unstable();
        state_enabled.dedup();
        enabled[id as usize] = state_enabled;
        fair_edges[id as usize] = state_edges;
    }

    let mut liveness = Vec::new();
    if limits.check_liveness {
        for (bit, property) in properties.iter().enumerate() {
            let bad: Vec<bool> = goals.iter().map(|g| g & (1 << bit) == 0).collect();
            let verdict = match find_fair_bad_component(&bad, &enabled, &fair_edges) {
                None => Verdict::Holds,
                Some(cycle) => {
                    // The path to the component's entry state, then once around the cycle.
                    let mut path = path_to(&meta, cycle[0].0);
                    let prefix_len = path.len();
                    path.extend(cycle.iter().map(|(_, edge)| *edge));
                    let mut trace = replay(model, &initial, &path, limits);
                    trace.cycle_from = Some(prefix_len);
                    Verdict::Violated {
                        message: format!("\"{}\" never holds again on a fair run", property.name),
                        trace,
                    }
                }
            };
            liveness.push((property.name, verdict));
        }
    }
    Report { states: meta.len(), transitions, cut_off, depth, safety: Verdict::Holds, liveness }
}

fn violated_safety(
    message: String,
    trace: Trace,
    states: usize,
    transitions: usize,
    cut_off: usize,
    depth: usize,
) -> Report {
    Report { states, transitions, cut_off, depth, safety: Verdict::Violated { message, trace }, liveness: Vec::new() }
}

fn path_to(meta: &[Meta], target: u32) -> Vec<(u32, u32)> {
    let mut path = Vec::new();
    let mut at = target;
    while meta[at as usize].parent != NONE {
        path.push((meta[at as usize].action, meta[at as usize].outcome));
        at = meta[at as usize].parent;
    }
    path.reverse();
    path
}

/// Re-executes a path of (action number, outcome number) from the initial state to print it.
fn replay<M: Model>(model: &M, initial: &M::State, path: &[(u32, u32)], limits: Limits) -> Trace {
    let mut state = initial.clone();
    let mut steps = Vec::new();
    for &(action_number, outcome_number) in path {
        let actions = model.actions(&state);
        let action = &actions[action_number as usize];
        let description = model.describe_action(&state, action);
        match outcomes(model, &state, action, &limits) {
            Ok(results) => match results.into_iter().nth(outcome_number as usize).flatten() {
                Some(next) => {
                    steps.push(TraceStep { action: description, changes: model.describe_state(Some(&state), &next) });
                    state = next;
                }
                None => {
                    steps.push(TraceStep { action: description, changes: vec!["(leaves the bounds)".into()] });
                    break;
                }
            },
            Err(panic) => {
                steps.push(TraceStep { action: description, changes: vec![panic] });
                break;
            }
        }
    }
    Trace { initial: model.describe_state(None, initial), steps, cycle_from: None }
}

/// Finds a fair end component of bad states. Returns a cycle through it as (state, step taken)
/// pairs, a step being (action number, outcome number) as [`replay`] takes them.
fn find_fair_bad_component(
    bad: &[bool],
    enabled: &[Vec<u32>],
    fair_edges: &[FairEdges],
) -> Option<Vec<(u32, (u32, u32))>> {
    let n = bad.len();
    // kept[s] = fair edges of s (index into fair_edges[s]) still inside the candidate set.
    let mut kept: Vec<Vec<usize>> = (0..n)
        .map(|s| {
            if !bad[s] {
                return Vec::new();
            }
            fair_edges[s]
                .iter()
                .enumerate()
                .filter(|(_, edge)| edge.outcomes.iter().all(|&t| t != NONE && bad[t as usize]))
                .map(|(i, _)| i)
                .collect()
        })
        .collect();
    loop {
        let component = strongly_connected(n, &kept, fair_edges);
        let mut changed = false;
        for s in 0..n {
            let c = component[s];
            let before = kept[s].len();
            kept[s].retain(|&i| fair_edges[s][i].outcomes.iter().all(|&t| component[t as usize] == c));
            changed |= kept[s].len() != before;
        }
        if changed {
            continue;
        }
        // Group states by component; judge each component with at least one internal edge.
        let mut members: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for s in 0..n {
            if bad[s] && !kept[s].is_empty() {
                members.entry(component[s]).or_default().push(s as u32);
            }
        }
        for states in members.values() {
            // Every state of a real component keeps at least one edge; states without one are
            // not in it (they were filtered above).
            let in_component: BTreeSet<u32> = states.iter().copied().collect();
            if states.iter().any(|&s| kept[s as usize].is_empty()) {
                continue;
            }
            let mut always_enabled: BTreeSet<u32> = enabled[states[0] as usize].iter().copied().collect();
            let mut taken = BTreeSet::new();
            for &s in states {
                let here: BTreeSet<u32> = enabled[s as usize].iter().copied().collect();
                always_enabled = always_enabled.intersection(&here).copied().collect();
                for &i in &kept[s as usize] {
                    taken.insert(fair_edges[s as usize][i].key);
                }
            }
            if always_enabled.is_subset(&taken) {
                return Some(cycle_through(states[0], &in_component, &kept, fair_edges));
            }
        }
        return None;
    }
}

/// A cycle from `start` back to itself inside the component that takes an edge of every fair
/// action the component takes: the witness printed. (The fair run goes around the whole
/// component; this loop shows each fair action happening and the goal still never holding,
/// not just the shortest way around.)
fn cycle_through(
    start: u32,
    component: &BTreeSet<u32>,
    kept: &[Vec<usize>],
    fair_edges: &[FairEdges],
) -> Vec<WitnessStep> {
    let keys: BTreeSet<u32> =
        component.iter().flat_map(|&s| kept[s as usize].iter().map(move |&i| fair_edges[s as usize][i].key)).collect();
    let mut cycle = Vec::new();
    let mut at = start;
    for key in keys {
        let (steps, end) = path_within(at, component, kept, fair_edges, |edge, _| edge.key == key);
        cycle.extend(steps);
        at = end;
    }
    if at != start || cycle.is_empty() {
        let (steps, _) = path_within(at, component, kept, fair_edges, |_, target| target == start);
        cycle.extend(steps);
    }
    cycle
}

/// A step of a witness: the state it leaves and (action number, outcome number).
type WitnessStep = (u32, (u32, u32));

/// The shortest path of kept edges inside the component from `from` whose last edge satisfies
/// `goal(edge, state it leads to)`, and the state it ends in.
fn path_within(
    from: u32,
    component: &BTreeSet<u32>,
    kept: &[Vec<usize>],
    fair_edges: &[FairEdges],
    goal: impl Fn(&FairEdge, u32) -> bool,
) -> (Vec<WitnessStep>, u32) {
    // BFS; parent[t] = (s, edge index, outcome index) of the edge that first reached t.
    let mut parent: BTreeMap<u32, (u32, usize, usize)> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    let mut visited = BTreeSet::from([from]);
    let step = |s: u32, i: usize, o: usize| {
        let edge = &fair_edges[s as usize][i];
        (s, (edge.action, edge.first_outcome + o as u32))
    };
    while let Some(s) = queue.pop_front() {
        for &i in &kept[s as usize] {
            let edge = &fair_edges[s as usize][i];
            for (o, &t) in edge.outcomes.iter().enumerate() {
                if !component.contains(&t) {
                    continue;
                }
                if goal(edge, t) {
                    let mut path = vec![step(s, i, o)];
                    let mut at = s;
                    while at != from {
                        let (p, pi, po) = parent[&at];
                        path.push(step(p, pi, po));
                        at = p;
                    }
                    path.reverse();
                    return (path, t);
                }
                if visited.insert(t) {
                    parent.insert(t, (s, i, o));
                    queue.push_back(t);
                }
            }
        }
    }
    unreachable!("a strongly connected component with internal edges reaches every edge in it")
}

/// Tarjan's algorithm, iterative. Edges: for each kept fair edge of s, all its outcomes.
fn strongly_connected(n: usize, kept: &[Vec<usize>], fair_edges: &[FairEdges]) -> Vec<u32> {
    let successors = |s: usize| -> Vec<u32> {
        let mut out: Vec<u32> = kept[s].iter().flat_map(|&i| fair_edges[s][i].outcomes.iter().copied()).collect();
        out.sort_unstable();
        out.dedup();
        out
    };
    let mut index = vec![NONE; n];
    let mut low = vec![0u32; n];
    let mut on_stack = vec![false; n];
    let mut component = vec![NONE; n];
    let mut stack: Vec<u32> = Vec::new();
    let mut next_index = 0u32;
    let mut next_component = 0u32;
    for root in 0..n {
        if index[root] != NONE {
            continue;
        }
        let mut work: Vec<(u32, Vec<u32>, usize)> = vec![(root as u32, successors(root), 0)];
        index[root] = next_index;
        low[root] = next_index;
        next_index += 1;
        stack.push(root as u32);
        on_stack[root] = true;
        while let Some((v, succ, pos)) = work.last_mut() {
            let v = *v as usize;
            if *pos < succ.len() {
                let w = succ[*pos] as usize;
                *pos += 1;
                if index[w] == NONE {
                    index[w] = next_index;
                    low[w] = next_index;
                    next_index += 1;
                    stack.push(w as u32);
                    on_stack[w] = true;
                    let ws = successors(w);
                    work.push((w as u32, ws, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                if low[v] == index[v] {
                    loop {
                        let w = stack.pop().expect("v is on the stack") as usize;
                        on_stack[w] = false;
                        component[w] = next_component;
                        if w == v {
                            break;
                        }
                    }
                    next_component += 1;
                }
                work.pop();
                if let Some((parent, _, _)) = work.last() {
                    let p = *parent as usize;
                    low[p] = low[p].min(low[v]);
                }
            }
        }
    }
    component
}
