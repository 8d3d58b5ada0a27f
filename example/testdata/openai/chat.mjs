// Calls the llmauth example server through the official OpenAI Node SDK,
// as any application would, and prints the assistant's reply.
//
//   node chat.mjs BASE_URL API_KEY [--stream] [MESSAGE]
//
// BASE_URL and API_KEY may also come from LLMAUTH_BASE_URL and
// LLMAUTH_API_KEY. BASE_URL is http://HOST:PORT/v1/clients/NAME. On an API
// error it prints "status=NNN ErrorClass: message" on stderr and exits 1.
import OpenAI from 'openai';

const args = process.argv.slice(2);
const stream = args.includes('--stream');
const positional = args.filter((a) => a !== '--stream');
const baseURL = positional[0] ?? process.env.LLMAUTH_BASE_URL;
const apiKey = positional[1] ?? process.env.LLMAUTH_API_KEY;
const message = positional[2] ?? 'hello llmauth';

if (!baseURL || !apiKey) {
  console.error('usage: node chat.mjs BASE_URL API_KEY [--stream] [MESSAGE]');
  process.exit(2);
}

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 15_000 });
const request = {
  model: 'llmauth-echo',
  messages: [{ role: 'user', content: message }],
};

try {
  if (stream) {
    const chunks = await client.chat.completions.create({ ...request, stream: true });
    let text = '';
    for await (const chunk of chunks) {
      text += chunk.choices[0]?.delta?.content ?? '';
    }
    console.log(text);
  } else {
    const completion = await client.chat.completions.create(request);
    console.log(completion.choices[0].message.content);
  }
} catch (err) {
  if (err instanceof OpenAI.APIError) {
    console.error(`status=${err.status} ${err.constructor.name}: ${err.message}`);
  } else {
    console.error(`error: ${err?.message ?? err}`);
  }
  process.exit(1);
}
