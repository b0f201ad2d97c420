// The shapes of the toplevel's answers (the generic checks and the institution and node answers
// are in answers.js). The toplevel holds the session and the patients: a broken or taken-over one
// that answers a login with a token that is no text left the viewer half logged in, a lifetime
// that is text renewed the session in a tight loop (a timer of NaN ms fires at once), a patient
// `null` opened the edit form as a new patient. Each Shape says what an answer must hold, within
// the toplevel's own bounds (docs/API.md, daemons/toplevel/settings.py); api.js `shaped` turns a
// failed check into a bad answer naming the toplevel and the field.

import { answerAbout, count, need, object, optional, pageOf, serviceUrl, text, uuid } from "./answers.js";

/** A token the toplevel mints lives at most this long for a server other than itself (shared/tokens.py MAX_EXCHANGED_TTL_S). */
const MAX_EXCHANGED_TTL_S = 60;

/** A date as the toplevel writes one (ISO 8601, `YYYY-MM-DD`). */
const ISO_DATE = /^\d{4}-\d{2}-\d{2}$/;

/** A bearer token: text, never empty (an empty one is sent as no token at all). @param {any} value @param {string} name */
function token(value, name) {
  text(value, name);
  need(value !== "", `${name} is empty`);
}

/** A lifetime in whole seconds, at least one (`tokens.*_ttl_s`, minimum 1). @param {any} value @param {string} name @param {number} [max] */
function lifetime(value, name, max) {
  count(value, name, max);
  need(value >= 1, `${name} is 0`);
}

/** The user a session is of (User, docs/API.md): its id and institution are sent on, its name shown. @param {any} user @param {string} name */
function sessionUser(user, name) {
  object(user, name);
  uuid(user.id, `${name}.id`);
  text(user.username, `${name}.username`);
  optional(user.full_name, `${name}.full_name`, text);
  optional(user.institution_id, `${name}.institution_id`, uuid);
}

/** A login's or a renewal's answer: `{access_token, expires_in, user}`. @param {any} body */
function sessionAnswer(body) {
  object(body, "the answer");
  token(body.access_token, "access_token");
  lifetime(body.expires_in, "expires_in");
  sessionUser(body.user, "user");
}

/** The answer to a login (`POST api/v1/auth/login`). @type {import("./answers.js").Shape} */
export const SESSION = { asked: "the session", check: sessionAnswer };

/**
 * The answer to a renewal (`POST api/v1/auth/renew`) of user `userId`'s session: a renewal naming
 * another user would have the viewer go on under that user's name and institution.
 * @param {string} userId @returns {import("./answers.js").Shape}
 */
export function renewalShape(userId) {
  return {
    asked: "the renewed session",
    check(body) {
      sessionAnswer(body);
      need(body.user.id === userId, "user names another user than the one logged in");
    },
  };
}

/**
 * A token exchanged for the server of `audience` (`POST api/v1/auth/token`): `{access_token,
 * expires_in, audience}`, the lifetime at most the toplevel's own bound for such tokens, and the
 * audience the one asked for (api.js audienceOf, as the toplevel normalizes it too). A token
 * answered for another server would be sent to this one, which could replay it at that other
 * server for the token's life: a toplevel, or a proxy before it, that mixed up two exchanges.
 * @param {string} audience @returns {import("./answers.js").Shape}
 */
export function serverTokenShape(audience) {
  return {
    asked: "the server's access token",
    check(body) {
      object(body, "the answer");
      token(body.access_token, "access_token");
      lifetime(body.expires_in, "expires_in", MAX_EXCHANGED_TTL_S);
      text(body.audience, "audience");
      need(body.audience === audience, "audience names another server than the one the token was asked for");
    },
  };
}

/** A patient (Patient, docs/API.md). @param {any} patient @param {string} name */
function patientShape(patient, name) {
  object(patient, name);
  uuid(patient.id, `${name}.id`);
  for (const key of ["first_name", "last_name", "sex", "insurance_number"]) text(patient[key], `${name}.${key}`);
  need(typeof patient.birth_date === "string" && ISO_DATE.test(patient.birth_date), `${name}.birth_date is no date`);
}

/**
 * A page of patients (`GET api/v1/patients`, the search and the work list's matching rule): each
 * a patient, whose id goes into the links and the registrations made for it.
 * @type {import("./answers.js").Shape}
 */
export const PATIENT_LIST = pageOf("the list of patients", patientShape);

/**
 * Patient `id` (`GET api/v1/patients/<id>`): `null` opened the edit form as a new patient, and
 * another patient's answer had that one edited, or uploaded for, in this one's place.
 * @param {string} id @returns {import("./answers.js").Shape}
 */
export function patientAbout(id) {
  return answerAbout(id, "the patient", "patient", (body) => patientShape(body, "the patient"));
}

/**
 * A patient just created (`POST api/v1/patients`): the viewer goes to its page by its id, so a
 * `null` answer threw, and an id that was a path (`../admin`) led elsewhere.
 * @type {import("./answers.js").Shape}
 */
export const NEW_PATIENT = {
  asked: "the patient created",
  check: (body) => patientShape(body, "the patient"),
};

/**
 * A patient reference (`POST api/v1/patients/<id>/reference`): the signed text an institution
 * stores data of the patient with. Anything else was sent on, and the institution's refusal
 * blamed the registration or the finding, not the toplevel.
 * @type {import("./answers.js").Shape}
 */
export const PATIENT_REFERENCE = {
  asked: "the patient reference",
  check(body) {
    object(body, "the answer");
    token(body.patient_reference, "patient_reference");
    optional(body.expires_in, "expires_in", lifetime);
  },
};

/**
 * An institution as the toplevel lists it (Institution, daemons/toplevel/serialize.py): the patient
 * page sorts them by name and asks each at its `server_url` ("" for one without a server).
 * @type {import("./answers.js").Shape}
 */
export const INSTITUTIONS = pageOf("the institutions", (inst, name) => {
  object(inst, name);
  uuid(inst.id, `${name}.id`);
  text(inst.name, `${name}.name`);
  text(inst.server_url, `${name}.server_url`);
  if (inst.server_url !== "") serviceUrl(inst.server_url, `${name}.server_url`);
});

/** A record type's code as the toplevel keeps one (shared/field_rules.record_type_code). */
const RECORD_TYPE_CODE = /^[A-Z0-9][A-Z0-9_-]{0,15}$/;

/**
 * A record type (RecordType, daemons/toplevel/record_types.py): the record's relabelling offers
 * each as a choice and sends the code chosen back to the institution.
 * @type {import("./answers.js").Shape}
 */
export const RECORD_TYPES = pageOf("the record types", (type, name) => {
  object(type, name);
  need(typeof type.code === "string" && RECORD_TYPE_CODE.test(type.code), `${name}.code is no record type code`);
  text(type.name, `${name}.name`);
});
