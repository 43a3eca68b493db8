// The dashboard: sign in once per tab, then the job list (#/) or a job's page (#/jobs/<id>),
// with the submission form and the live activity panel beside them. Plain ES modules, no
// build step: every file here is served as it is written.

import { ActivityPanel } from "./activity.js";
import { ApiError } from "./api.js";
import { h, replace } from "./dom.js";
import { JobList } from "./joblist.js";
import { JobPage } from "./jobpage.js";
import { forgetKey, signIn, storedKey } from "./session.js";
import { SubmitForm } from "./submitform.js";

const $ = (id) => document.getElementById(id);
const MODE_TEXT = { open: "open mode (no access control)", admin: "admin key: every tenant", tenant: "tenant key" };

let session = null;
let list = null;
let view = null;
let activity = null;

async function start() {
  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    enter($("api-key").value.trim());
  });
  $("sign-out").addEventListener("click", signOut);
  window.addEventListener("hashchange", route);
  await enter(storedKey());
}

async function enter(key) {
  replace($("sign-in-error"));
  try {
    session = await signIn(key);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      if (key) forgetKey();
      askForKey(key ? "That key was refused: check it, or ask for one (`jobtrail keys new TENANT`)." : "");
    } else {
      askForKey(`The API did not answer as expected: ${error.message}`);
    }
    return;
  }
  $("sign-in").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = !session.api.key;
  replace($("who"), MODE_TEXT[session.mode]);
  const form = new SubmitForm(session.api, { onSubmitted: (job) => { location.hash = `#/jobs/${encodeURIComponent(job.id)}`; } });
  let kinds = [];
  try {
    kinds = await form.load();
  } catch (error) {
    replace($("submit-error"), `Could not read the job kinds: ${error.message}`);
  }
  list = new JobList(session.api, session.mode, kinds);
  activity = new ActivityPanel(session.api, { onEntry: (entry) => list.onFeedEntry(entry) });
  activity.start();
  route();
}

function askForKey(message) {
  $("app").hidden = true;
  $("sign-in").hidden = false;
  replace($("sign-in-error"), message);
  $("api-key").focus();
}

function signOut() {
  forgetKey();
  view?.unmount();
  view = null;
  activity?.stop();
  session = null;
  replace($("who"));
  $("sign-out").hidden = true;
  $("api-key").value = "";
  askForKey("");
}

function route() {
  if (!session) return;
  const match = location.hash.match(/^#\/jobs\/([^/?#]+)/);
  view?.unmount();
  view = match
    ? new JobPage(session.api, session.mode, decodeURIComponent(match[1]), { confirm })
    : list;
  document.body.classList.toggle("route-job", Boolean(match));
  const main = $("content");
  Promise.resolve(view.mount(main)).then(() => {
    // Focus the new view's heading, so keyboard and screen-reader users land on it.
    main.querySelector("h1")?.focus({ preventScroll: false });
  });
  document.title = match ? `Job ${decodeURIComponent(match[1])} · jobtrail` : "jobtrail";
}

// A confirmation in a modal <dialog>: focus moves into it and returns after, Esc says no.
function confirm(title, text, verb) {
  const dialog = $("confirm");
  replace($("confirm-title"), title);
  replace($("confirm-text"), text);
  replace($("confirm-ok"), verb);
  const opener = document.activeElement;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      opener?.focus?.();
      resolve(dialog.returnValue === "ok");
    }, { once: true });
  });
}

start();
