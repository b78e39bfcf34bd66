// Resident tracking by service request number, through the public Open311 API.
const form = document.getElementById("track-form");
const result = document.getElementById("track-result");

function show(nodes) {
  result.replaceChildren(...nodes);
}

function line(text, className) {
  const p = document.createElement("p");
  p.textContent = text;
  if (className) p.className = className;
  return p;
}

async function track(id) {
  show([line("Looking up your report…")]);
  let response;
  try {
    response = await fetch(`/open311/v2/requests/${encodeURIComponent(id)}.json`);
  } catch {
    show([line("Cannot reach the server. Check your connection and try again.", "error")]);
    return;
  }
  if (response.status === 404) {
    show([line(`No report with number ${id}.`, "error")]);
    return;
  }
  if (!response.ok) {
    show([line("Something went wrong. Please try again later.", "error")]);
    return;
  }
  const [request] = await response.json();
  const when = request.updated_datetime || request.requested_datetime;
  show([
    line(`${request.service_name}${request.address ? " at " + request.address : ""}`),
    line(request.status === "closed" ? "Closed" : "Open", "status"),
    line(request.status_notes || ""),
    line(when ? `Last update: ${new Date(when).toLocaleString()}` : ""),
  ].filter((p) => p.textContent));
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const id = new FormData(form).get("request-id").toString().trim();
  if (id) track(id);
});
