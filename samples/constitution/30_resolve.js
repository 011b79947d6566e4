// Charter's default constitution, part 4 of 5: resolve.
//
// A proposal is Accepted once a strict majority of the active members
// has voted for it, and Rejected as soon as that can no longer happen
// (enough active members voted against). Otherwise it stays Open. Votes
// of members that are not active do not count.

export function resolve(proposal, proposerId, votes) {
  const active = new Set(activeMemberIds());
  const needed = Math.floor(active.size / 2) + 1;
  let yes = 0;
  let no = 0;
  const counted = new Set();
  for (const v of votes) {
    if (!active.has(v.member_id) || counted.has(v.member_id)) continue;
    counted.add(v.member_id);
    if (v.vote === true) yes++;
    else no++;
  }
  if (yes >= needed) return "Accepted";
  if (active.size - no < needed) return "Rejected";
  return "Open";
}
