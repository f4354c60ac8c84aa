// Forms that only group controls (publish key, detector options) must not be submitted by
// Enter. This replaces inline onsubmit="return false", which the Content-Security-Policy
// refuses (no inline handlers).
export function keepFormsLocal(root = document) {
  for (const form of root.querySelectorAll("form[data-no-submit]")) {
    form.addEventListener("submit", (event) => event.preventDefault());
  }
}
