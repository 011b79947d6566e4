// Charter's default constitution, part 5 of 5: apply.
//
// Performs the actions of an accepted proposal in order. If one throws,
// the proposal fails and none of its writes are kept (the host discards
// them).

export function apply(proposal, proposalId) {
  const parsed = JSON.parse(proposal);
  parsed.actions.forEach((entry) => {
    const definition = actions.get(entry.name);
    if (definition === undefined) throw new Error("unknown action " + JSON.stringify(entry.name));
    definition.apply(entry.args === undefined ? {} : entry.args, proposalId);
  });
}
