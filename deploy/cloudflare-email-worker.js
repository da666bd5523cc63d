// Cloudflare Email Worker: forwards every message routed to it to lm-ingest as raw RFC 822.
//
// Set up (see README.md, "Cloudflare Email Routing"):
//   npx wrangler secret put LM_INGEST_TOKEN       # the ingest token
//   npx wrangler secret put LM_INGEST_URL         # https://<your-app>.fly.dev/inbound/email
//   npx wrangler deploy
// then in Email Routing, route an address (e.g. money@yourdomain) to this worker.
export default {
  async email(message, env) {
    const raw = await new Response(message.raw).arrayBuffer();
    const response = await fetch(env.LM_INGEST_URL, {
      method: "POST",
      headers: {
        "Authorization": `Bearer ${env.LM_INGEST_TOKEN}`,
        "Content-Type": "message/rfc822",
      },
      body: raw,
    });
    if (response.status >= 500) {
      // Temporary failure: reject so the sending server retries later rather than losing it.
      message.setReject(`lm-ingest unavailable (${response.status}); try again later`);
      return;
    }
    if (!response.ok) {
      // 4xx: the message itself was refused (bad credentials, malformed, too large). Say why.
      const reason = await response.text();
      console.log(`lm-ingest refused the message: ${response.status} ${reason}`);
    }
  },
};
