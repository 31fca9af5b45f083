/** What `require("cohort/…")` loads: Cohort is ESM only, so CommonJS gets this error, not a "subpath not exported". */

/** The error a CommonJS `require` of any Cohort entry point throws. */
const error = new Error(
  "Cohort is an ES module package and cannot be loaded with require(). " +
    'Use import (import { CohortClient } from "cohort/client"), or from CommonJS ' +
    'the dynamic form: const { CohortClient } = await import("cohort/client").',
);
// Node's own code for "this is ESM, use import()", so tools that test for it keep working.
Object.assign(error, { code: "ERR_REQUIRE_ESM" });
throw error;
