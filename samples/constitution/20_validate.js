// Charter's default constitution, part 3 of 5: validate.
//
// A proposal is JSON: {"actions": [{"name": "...", "args": {...}}, ...]}
// with at least one action. validate checks its shape and every action's
// arguments, and says which action and which argument is wrong.

function parseProposal(input) {
  let proposal;
  try {
    proposal = JSON.parse(input);
  } catch (e) {
    return { problems: ["the proposal is not valid JSON: " + e.message] };
  }
  if (!isPlainObject(proposal)) {
    return { problems: ["the proposal must be a JSON object {\"actions\": [...]}"] };
  }
  if (!Array.isArray(proposal.actions) || proposal.actions.length === 0) {
    return { problems: ["proposal.actions must be a non-empty array of {name, args}"] };
  }
  return { proposal, problems: [] };
}

function actionProblems(entry, index) {
  if (!isPlainObject(entry)) {
    return ["actions[" + index + "] must be an object {name, args}"];
  }
  if (typeof entry.name !== "string") {
    return ["actions[" + index + "].name must be a string"];
  }
  const definition = actions.get(entry.name);
  if (definition === undefined) {
    return ["actions[" + index + "]: unknown action " + JSON.stringify(entry.name)];
  }
  const args = entry.args === undefined ? {} : entry.args;
  if (!isPlainObject(args)) {
    return [entry.name + ": args must be an object, got " + describeType(args)];
  }
  return definition.validate(args).map((problem) => entry.name + ": " + problem);
}

export function validate(input) {
  const parsed = parseProposal(input);
  const problems = parsed.problems;
  if (parsed.proposal !== undefined) {
    parsed.proposal.actions.forEach((entry, i) => {
      for (const p of actionProblems(entry, i)) problems.push(p);
    });
  }
  return { valid: problems.length === 0, description: problems.join("; ") };
}
