// The openai JS SDK through the gateway: one response plain, one streamed, then a follow-up.
// Usage: node responses.mjs <gateway url> <subscription key>; prints one JSON line of what it saw.
import OpenAI from "openai";

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey, maxRetries: 0 });

const plain = await client.responses.create({ model: "chat", input: "Hello from JavaScript", max_output_tokens: 6 });
const types = [];
let completed = null;
const stream = await client.responses.create({ model: "chat", input: "Stream it", max_output_tokens: 6, stream: true });
for await (const event of stream) {
  types.push(event.type);
  if (event.type === "response.completed") completed = event.response;
}
const followUp = await client.responses.create({
  model: "chat",
  input: "And then?",
  previous_response_id: completed.id,
  max_output_tokens: 4,
});
console.log(
  JSON.stringify({
    plainText: plain.output_text,
    plainUsage: plain.usage,
    types,
    streamedUsage: completed.usage,
    followUpPrevious: followUp.previous_response_id,
  }),
);
