import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { AgentPolicy } from '../../src/config/types.ts';
import { agentForBearer } from '../../src/front/bearer.ts';

const hash = (token: string) => createHash('sha256').update(token).digest();
const agents = new Map<string, AgentPolicy>([
  ['alice', { name: 'alice', tokenSha256: hash('alice-token'), grants: [], promptGrants: [], resourceGrants: [], serverRequestGrants: [], rateLimit: {} }],
  ['bob', { name: 'bob', tokenSha256: hash('bob-token'), grants: [], promptGrants: [], resourceGrants: [], serverRequestGrants: [], rateLimit: {} }],
  ['stdio-only', { name: 'stdio-only', grants: [], promptGrants: [], resourceGrants: [], serverRequestGrants: [], rateLimit: {} }],
]);

describe('agentForBearer', () => {
  it('maps a token to the agent whose hash matches', () => {
    assert.equal(agentForBearer('Bearer alice-token', agents), 'alice');
    assert.equal(agentForBearer('bearer bob-token', agents), 'bob');
  });

  it('refuses missing, wrong, malformed and oversized credentials', () => {
    for (const header of [undefined, '', 'Bearer', 'Bearer ', 'Basic YWxpY2U6eA==', 'alice-token', 'Bearer alice-token2', 'Bearer alice token', `Bearer ${'a'.repeat(5000)}`, 'Bearer alice-tokén']) {
      assert.equal(agentForBearer(header, agents), undefined, String(header));
    }
  });

  it('never matches an agent that has no token (stdio-only)', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 100 }), (token) => {
        const agent = agentForBearer(`Bearer ${token}`, agents);
        assert.ok(agent === undefined || (agent === 'alice' && token === 'alice-token') || (agent === 'bob' && token === 'bob-token'));
      }),
      { numRuns: 300 },
    );
  });
});
