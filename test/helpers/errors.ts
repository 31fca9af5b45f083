/** Assertions on CohortError codes, shared by the suites. */
import { expect } from "vitest";
import { CohortError, type ErrorCode } from "../../protocol/errors.js";

/** Run `fn`, expect a CohortError with `code` (and a message matching `message`), return it. */
export function expectCohortError(
  fn: () => unknown,
  code: ErrorCode,
  message?: RegExp,
): CohortError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  return checkError(caught, code, message);
}

/** Await `promise`, expect it to reject with a CohortError with `code`, return the error. */
export async function expectRejectsCode(
  promise: Promise<unknown>,
  code: ErrorCode,
  message?: RegExp,
): Promise<CohortError> {
  const caught: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  return checkError(caught, code, message);
}

function checkError(caught: unknown, code: ErrorCode, message?: RegExp): CohortError {
  expect(caught).toBeInstanceOf(CohortError);
  const error = caught as CohortError;
  expect(error.code).toBe(code);
  if (message) expect(error.message).toMatch(message);
  return error;
}
