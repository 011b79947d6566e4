export function main( {
