import type { AuditRecord, AuditTrail } from '../audit/trail.ts';

/**
 * An audit trail that is the given one, plus a look at each record once it is written:
 * the metrics are derived from the audit trail, the one account of what the broker did.
 * Every member is delegated explicitly; the check below fails to compile when the trail
 * gains a member this does not pass on. The observer runs after the write and whatever
 * it does (throw included) never reaches the writer: a metrics fault cannot fail, delay
 * or reorder an audit record. A record that could not be written is not observed.
 */
export function observeAuditTrail(trail: AuditTrail, observe: (record: AuditRecord) => void): AuditTrail {
  const seen = (record: AuditRecord): void => {
    try {
      observe(record);
    } catch {
      // metrics are best effort; the audit trail is not
    }
  };
  const observed: { [K in Delegated]: AuditTrail[K] } = {
    write(record) {
      trail.write(record);
      seen(record);
    },
    get healthy() {
      return trail.healthy;
    },
    close() {
      trail.close();
    },
  };
  return observed;
}

const DELEGATED = ['write', 'healthy', 'close'] as const;
type Delegated = (typeof DELEGATED)[number];
// Compiles only while DELEGATED names every member of AuditTrail, optional ones included.
const everyMember: Exclude<keyof AuditTrail, Delegated> extends never ? true : never = true;
void everyMember;
