// The visitor's camera and microphone: open them with fallbacks, and say in plain words
// why they could not be opened. The one place pages call getUserMedia (room pages, the
// publisher page, the face page).

export const VIDEO_CONSTRAINTS = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 20 } };

export function describeMediaError(err) {
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    return "this page is not a secure context (https:// or localhost), so the browser offers no camera or microphone";
  }
  switch (err?.name) {
    case "NotAllowedError":
      return "access to the camera and microphone was denied (by you, the browser or a site setting)";
    case "NotFoundError":
      return "no camera or microphone was found";
    case "NotReadableError":
    case "AbortError":
      return "the camera or microphone is in use by another application, or failed to start";
    case "OverconstrainedError":
      return "no camera matches the requested settings";
    case "SecurityError":
      return "camera access is blocked for this page (permissions policy)";
    default:
      return `the camera or microphone could not be opened (${err?.name ?? "error"}: ${err?.message ?? err})`;
  }
}

// Both camera and mic, else whichever of the two exists (a laptop without a mic still
// shows video). ``video``: the camera constraints. Returns {stream (or null), error (the
// first failure, or null)}.
export async function openLocalMedia({ video = VIDEO_CONSTRAINTS } = {}) {
  if (!navigator.mediaDevices?.getUserMedia) return { stream: null, error: null };
  let error = null;
  for (const constraints of [{ audio: true, video }, { video }, { audio: true }]) {
    try {
      return { stream: await navigator.mediaDevices.getUserMedia(constraints), error };
    } catch (err) {
      error ??= err;
      if (err.name === "NotAllowedError" || err.name === "SecurityError") break; // asking again won't help
    }
  }
  return { stream: null, error };
}
