// Package budget is the accounting behind GPUBudget: what the GPURequests of
// a namespace spend, what each budget still allows, and a ledger of
// headroom reserved by launches in flight. It is pure: it reads objects
// the caller lists (from informers) and a clock, and never calls the API
// server or a provider.
//
// # Money
//
// Amounts are float64 US dollars in the API (plain JSON numbers, as
// GPURequest prices are) and integer micro-dollars in here: every sum and
// comparison is exact to $0.000001, the precision accumulatedCost is
// rounded to, so seven machines at $0.10/h fill a $0.70/h budget exactly.
// An amount read from a status counts as at least 0 and at most a billion
// dollars (a forged negative price credits nobody).
//
// # What counts
//
//   - Hourly spend and GPUs in use: every GPURequest of the namespace whose
//     machine is Live (phase Provisioning, Booting, Joining, Ready or
//     Terminating with status.machineName and status.hourlyPrice: the
//     write-ahead record counts, so a launch in flight across a restart is
//     not forgotten), plus the ledger's reservations.
//   - Month-to-date spend, in the calendar month in UTC (from 00:00 UTC on
//     the 1st): each request's status.monthCost for that month, plus what
//     its billing machine accrued since status.costUpdatedAt that the
//     controller has not written yet, plus the budget's status.deleted (the
//     month's spend of requests already deleted). Terminated requests that
//     still exist count through their own monthCost.
//
// # Where the truth lives (and why a restart changes nothing)
//
// Nothing that a restart or a leader change could lose is kept in memory:
//
//   - Each GPURequest's spend is in its own status: accumulatedCost (all
//     time) and monthCost (this month; Accrue keeps both, splitting an
//     accrual that spans 00:00 UTC on the 1st so only the new month's part
//     counts in it). A new leader reads them from its informer.
//   - The spend of a deleted GPURequest is in every GPUBudget's
//     status.deleted of its namespace. Before the controller releases a
//     request's finalizer it calls RecordDeletion on each budget and writes
//     them (UpdateStatus, guarded by resourceVersion); only when all writes
//     succeeded does it release the finalizer. The entry is keyed by the
//     request's UID and never lowered, so a retry, a crash between the
//     writes and the release, or a new leader doing it again records it
//     once. While the request is still listed its entry replaces its own
//     monthCost in the sum (never both); once it is gone, Evaluate folds
//     the entry into deleted.cost, so the list stays short. In a new month
//     deleted starts again from zero. A budget counted for the first time
//     takes its deleted record from the sibling budget that has recorded
//     the most this month.
//   - Reservations (the Ledger) are the only memory: they cover the moments
//     between a Reserve and the Source showing the write-ahead record, which
//     is written before the launch call; after a crash the record itself
//     counts. A committed reservation is dropped as soon as the Source
//     shows the machine at its price (or the request is gone, or
//     CommitTTL passes).
//
// What is not counted: a GPURequest deleted while no GPUBudget existed in
// its namespace, or whose finalizer someone else removed, takes its month's
// spend with it; a budget created later with no sibling cannot see it. A
// request stored before monthCost existed counts its whole accumulatedCost
// when its first machine was provisioned this month, and otherwise only
// what accrues from the upgrade on. Status is a record: whoever may write
// gpurequests/status can understate a request's spend, so tenants should
// be granted gpurequests but not gpurequests/status.
//
// # What the controller calls, and when
//
//   - Accrue(&req.Status, now) wherever it accrues cost (instead of updating
//     accumulatedCost itself); Billing and Live are the predicates it uses.
//   - Ledger: NewLedger(ListerSource(budgetLister, requestLister), clock),
//     one per process. Before selection, Headroom(ns, uid): offers whose
//     Admit(price, gpus) fails lose with reason OverBudget (the error names
//     the budget). For the offer to launch: Reserve(Claim{...}); on an
//     *OverBudgetError that offer loses too (another worker took the
//     headroom) and the next is tried; then the write-ahead record, the
//     launch call, and Commit on success (or an ambiguous answer) or
//     Release on failure or when nothing was launched (defer Release is
//     safe). A relaunch after an interruption is a Claim like any other.
//     Forget(ns, uid) when a machine is terminated or a request deleted.
//   - State(budgets, reqs, now) per namespace: Hold refuses every launch;
//     Terminate also terminates the live machines, in TerminationOrder
//     (most expensive first, then newest, then name: see there).
//   - Evaluate(budget, siblings, reqs, now) per budget, written with
//     UpdateStatus when it changed; a budget sync is due when a request or
//     budget of the namespace changes, and at the next month's Start (UTC).
//   - RecordDeletion(budget, siblings, req, now) before releasing a
//     request's finalizer, as above.
package budget
