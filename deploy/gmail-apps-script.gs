// Google Apps Script: posts Gmail messages carrying a label to lm-ingest as raw RFC 822, then
// moves them to a "done" label. Run it from a time-driven trigger (e.g. every 5 minutes).
//
// Set up (see README.md, "Gmail"): Project Settings -> Script properties:
//   LM_INGEST_URL   = https://<your-app>.fly.dev/inbound/email
//   LM_INGEST_TOKEN = <the ingest token>
// and a Gmail filter that labels payment mail "lm-ingest" (e.g. from:venmo@venmo.com).
function forwardToLmIngest() {
  const props = PropertiesService.getScriptProperties();
  const url = props.getProperty("LM_INGEST_URL");
  const token = props.getProperty("LM_INGEST_TOKEN");
  const todo = GmailApp.getUserLabelByName("lm-ingest");
  const done = GmailApp.getUserLabelByName("lm-ingest/done") || GmailApp.createLabel("lm-ingest/done");
  for (const thread of todo.getThreads(0, 50)) {
    let allSent = true;
    for (const message of thread.getMessages()) {
      const response = UrlFetchApp.fetch(url, {
        method: "post",
        contentType: "message/rfc822",
        headers: { Authorization: "Bearer " + token },
        payload: Utilities.newBlob(message.getRawContent()).getBytes(),
        muteHttpExceptions: true,
      });
      const code = response.getResponseCode();
      // 200 covers new messages and duplicates alike; 5xx is retried on the next run.
      if (code >= 500) allSent = false;
      else if (code !== 200) console.log("lm-ingest refused a message: " + code + " " + response.getContentText());
    }
    if (allSent) {
      thread.removeLabel(todo);
      thread.addLabel(done);
    }
  }
}
